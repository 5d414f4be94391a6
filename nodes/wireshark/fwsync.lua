-- Wireshark dissector for the firewall cluster's sync protocol and its
-- home-node forwarding messages (UDP port 3780). The wire format is defined
-- in nodes/syncproto.py; this file follows it field by field.
--
--   tshark -X lua_script:nodes/wireshark/fwsync.lua -r results/.../pcap/sync.pcap
--   wireshark -X lua_script:nodes/wireshark/fwsync.lua results/.../pcap/sync.pcap
--
-- (or copy it to ~/.local/lib/wireshark/plugins/). Display filters: fwsync,
-- fwsync.type == 1 (DATA), fwsync.record.type == 3 (EXPECT), fwsync.home ...
-- The HMAC is shown, not checked: the dissector does not know the cluster key.

local PORT = 3780
local HEADER_LEN, MAC_LEN = 36, 16

local msg_types = { [1] = "DATA", [2] = "ACK", [3] = "HEARTBEAT",
                    [4] = "HOME_QUERY", [5] = "HOME_ANSWER", [6] = "FORWARD",
                    [7] = "COMMIT", [8] = "COMMIT_DONE", [9] = "DEATH" }
-- 9-12: the records of 1-4 for IPv6 connections (16-byte addresses)
local rec_types = { [1] = "ENTRY", [2] = "ENTRY_DEL", [3] = "EXPECT", [4] = "EXPECT_DEL",
                    [5] = "COMMON", [6] = "BULK_REQUEST", [7] = "BULK_END", [8] = "BULK_START",
                    [9] = "ENTRY6", [10] = "ENTRY_DEL6", [11] = "EXPECT6", [12] = "EXPECT_DEL6" }
local IPV6_RECORD = 8
local states = { [0] = "SYN_SENT", [1] = "SYN_RECV", [2] = "ESTABLISHED", [3] = "FIN_WAIT",
                 [4] = "LAST_ACK", [5] = "TIME_WAIT", [6] = "CLOSE", [7] = "UNREPLIED",
                 [8] = "REPLIED" }
local protos = { [1] = "ICMP", [6] = "TCP", [17] = "UDP", [58] = "ICMPv6" }
local ingress_names = { [0] = "outside", [1] = "inside" }

local p = Proto("fwsync", "Firewall cluster sync protocol")
local f = {
  magic    = ProtoField.uint16("fwsync.magic", "Magic", base.HEX),
  version  = ProtoField.uint8("fwsync.version", "Version"),
  type     = ProtoField.uint8("fwsync.type", "Type", base.DEC, msg_types),
  sender   = ProtoField.uint16("fwsync.sender", "Sender node"),
  receiver = ProtoField.uint16("fwsync.receiver", "Receiver node (0: every node)"),
  boot     = ProtoField.uint64("fwsync.boot", "Sender incarnation", base.HEX),
  rboot    = ProtoField.uint64("fwsync.rboot", "Receiver incarnation (as the sender knows it)", base.HEX),
  seq      = ProtoField.uint32("fwsync.seq", "Sequence number"),
  ack      = ProtoField.uint32("fwsync.ack", "Acknowledged up to"),
  length   = ProtoField.uint16("fwsync.length", "Payload length"),
  reserved = ProtoField.uint16("fwsync.reserved", "Reserved"),
  mac      = ProtoField.bytes("fwsync.mac", "HMAC-SHA256 (first 16 bytes)"),
  -- HEARTBEAT
  members  = ProtoField.uint8("fwsync.members", "Live members seen"),
  member   = ProtoField.uint16("fwsync.member", "Member"),
  ready    = ProtoField.bool("fwsync.ready", "Ready (holds its state)", 8, nil, 0x01),
  -- records of DATA
  record   = ProtoField.none("fwsync.record", "Record"),
  rtype    = ProtoField.uint8("fwsync.record.type", "Record type", base.DEC, rec_types),
  rlength  = ProtoField.uint16("fwsync.record.length", "Record length"),
  proto    = ProtoField.uint8("fwsync.proto", "Protocol", base.DEC, protos),
  src      = ProtoField.ipv4("fwsync.src", "Source"),
  sport    = ProtoField.uint16("fwsync.sport", "Source port"),
  dst      = ProtoField.ipv4("fwsync.dst", "Destination"),
  src6     = ProtoField.ipv6("fwsync.src6", "Source (IPv6)"),
  dst6     = ProtoField.ipv6("fwsync.dst6", "Destination (IPv6)"),
  dport    = ProtoField.uint16("fwsync.dport", "Destination port"),
  state    = ProtoField.uint8("fwsync.state", "State", base.DEC, states),
  owner    = ProtoField.uint16("fwsync.owner", "Owner node"),
  timeout  = ProtoField.uint32("fwsync.timeout", "Timeout (ms)"),
  flags    = ProtoField.uint8("fwsync.flags", "Flags", base.HEX),
  f_ftp    = ProtoField.bool("fwsync.flags.ftp", "FTP helper", 8, nil, 0x01),
  f_rel    = ProtoField.bool("fwsync.flags.related", "Related (has a master)", 8, nil, 0x02),
  f_win    = ProtoField.bool("fwsync.flags.window", "TCP window", 8, nil, 0x04),
  f_scales = ProtoField.bool("fwsync.flags.scales", "TCP window scales only", 8, nil, 0x08),
  window   = ProtoField.none("fwsync.window", "TCP window"),
  td_end   = ProtoField.uint32("fwsync.window.end", "End (seq + len)"),
  td_maxend = ProtoField.uint32("fwsync.window.maxend", "Max end (ack + window)"),
  td_maxwin = ProtoField.uint32("fwsync.window.maxwin", "Max window"),
  td_scale = ProtoField.uint8("fwsync.window.scale", "Window scale"),
  td_flags = ProtoField.uint8("fwsync.window.flags", "Direction flags", base.HEX),
  master   = ProtoField.none("fwsync.master", "Master connection"),
  name     = ProtoField.string("fwsync.common.name", "Common state name"),
  value    = ProtoField.bytes("fwsync.common.value", "Common state value"),
  records  = ProtoField.uint32("fwsync.bulk.records", "Records in the bulk transfer"),
  -- home-node forwarding
  query    = ProtoField.uint32("fwsync.query", "Query id"),
  ingress  = ProtoField.uint8("fwsync.ingress", "Ingress", base.DEC, ingress_names),
  home     = ProtoField.uint16("fwsync.home", "Home node"),
  conn     = ProtoField.none("fwsync.connection", "Connection"),
  frame    = ProtoField.bytes("fwsync.frame", "Packet"),
}
p.fields = {}
for _, field in pairs(f) do table.insert(p.fields, field) end

local eth = Dissector.get("eth_withoutfcs")

-- An address of ``a`` bytes (4: IPv4, 16: IPv6): its field and its text.
local function addr(buf, a, v4, v6)
  if a == 4 then return v4, tostring(buf:ipv4()) end
  return v6, tostring(buf:ipv6())
end

-- The five fields of a connection key (13 bytes, 37 for IPv6): proto, src, sport, dst, dport.
local function five(t, buf, a)
  t:add(f.proto, buf(0, 1)); t:add((addr(buf(1, a), a, f.src, f.src6)), buf(1, a))
  t:add(f.sport, buf(1 + a, 2))
  t:add((addr(buf(3 + a, a), a, f.dst, f.dst6)), buf(3 + a, a)); t:add(f.dport, buf(3 + 2 * a, 2))
end

-- A connection key as a subtree of its own (a master connection, a home's connection).
local function key(tree, buf, label, a)
  local t = tree:add(label, buf(0, 5 + 2 * a))
  five(t, buf, a)
  local _, s = addr(buf(1, a), a); local _, d = addr(buf(3 + a, a), a)
  t:append_text(string.format(" %s %s:%d -> %s:%d", protos[buf(0, 1):uint()] or buf(0, 1):uint(),
    s, buf(1 + a, 2):uint(), d, buf(3 + 2 * a, 2):uint()))
end

local function record(tree, buf)
  local rtype, len = buf(0, 1):uint(), buf(1, 2):uint()
  local t = tree:add(f.record, buf(0, 3 + len))
  t:append_text(": " .. (rec_types[rtype] or ("type " .. rtype)))
  t:add(f.rtype, buf(0, 1)); t:add(f.rlength, buf(1, 2))
  if len == 0 then return rtype, 3 end
  local v = buf(3, len)
  local a, kind = 4, rtype
  if rtype > IPV6_RECORD and rtype <= IPV6_RECORD + 4 then a, kind = 16, rtype - IPV6_RECORD end
  local k = 5 + 2 * a  -- a key's length
  if kind == 1 then          -- ENTRY
    five(t, v, a); t:add(f.state, v(k, 1))
    t:add(f.owner, v(k + 1, 2)); t:add(f.timeout, v(k + 3, 4))
    local ft = t:add(f.flags, v(k + 7, 1)); ft:add(f.f_ftp, v(k + 7, 1)); ft:add(f.f_rel, v(k + 7, 1))
    ft:add(f.f_win, v(k + 7, 1)); ft:add(f.f_scales, v(k + 7, 1))
    local flags, off = v(k + 7, 1):uint(), k + 8
    if bit.band(flags, 0x02) ~= 0 then key(t, v(off, k), f.master, a); off = off + k end
    local dirs = { "original", "reply" }
    if bit.band(flags, 0x04) ~= 0 then    -- both directions' window state, 14 bytes each
      for i = 0, 1 do
        local w = t:add(f.window, v(off + 14 * i, 14)); w:append_text(" (" .. dirs[i + 1] .. ")")
        local d = v(off + 14 * i, 14)
        w:add(f.td_end, d(0, 4)); w:add(f.td_maxend, d(4, 4)); w:add(f.td_maxwin, d(8, 4))
        w:add(f.td_scale, d(12, 1)); w:add(f.td_flags, d(13, 1))
      end
    elseif bit.band(flags, 0x08) ~= 0 then  -- scales only, 2 bytes each
      for i = 0, 1 do
        local w = t:add(f.window, v(off + 2 * i, 2)); w:append_text(" (" .. dirs[i + 1] .. ", scale)")
        w:add(f.td_scale, v(off + 2 * i, 1)); w:add(f.td_flags, v(off + 2 * i + 1, 1))
      end
    end
  elseif kind == 2 then      -- ENTRY_DEL
    five(t, v, a); t:add(f.owner, v(k, 2))
  elseif kind == 3 or kind == 4 then  -- EXPECT, EXPECT_DEL
    t:add(f.proto, v(0, 1)); t:add((addr(v(1, a), a, f.src, f.src6)), v(1, a))
    t:add((addr(v(1 + a, a), a, f.dst, f.dst6)), v(1 + a, a))
    t:add(f.dport, v(1 + 2 * a, 2)); t:add(f.owner, v(3 + 2 * a, 2))
    if kind == 3 then t:add(f.timeout, v(5 + 2 * a, 4)); key(t, v(9 + 2 * a, k), f.master, a) end
  elseif rtype == 5 then      -- COMMON
    local n = v(2, 1):uint()
    t:add(f.owner, v(0, 2)); t:add(f.name, v(3, n)); t:add(f.value, v(5 + n, v(3 + n, 2):uint()))
  elseif rtype == 7 then      -- BULK_END
    t:add(f.records, v(0, 4))
  end
  return rtype, 3 + len
end

function p.dissector(buf, pinfo, tree)
  if buf:len() < HEADER_LEN + MAC_LEN or buf(0, 2):uint() ~= 0x4657 then return 0 end
  local mtype = buf(3, 1):uint()
  local plen = buf(32, 2):uint()
  local t = tree:add(p, buf(), "Firewall cluster sync protocol")
  t:add(f.magic, buf(0, 2)); t:add(f.version, buf(2, 1)); t:add(f.type, buf(3, 1))
  t:add(f.sender, buf(4, 2)); t:add(f.receiver, buf(6, 2)); t:add(f.boot, buf(8, 8))
  t:add(f.rboot, buf(16, 8))
  t:add(f.seq, buf(24, 4)); t:add(f.ack, buf(28, 4)); t:add(f.length, buf(32, 2))
  t:add(f.reserved, buf(34, 2))
  if buf:len() < HEADER_LEN + plen + MAC_LEN then
    t:add_expert_info(PI_MALFORMED, PI_ERROR, "payload length beyond the datagram")
    return buf:len()
  end
  local pay = plen > 0 and buf(HEADER_LEN, plen) or nil
  local info = string.format("%s %d -> %s", msg_types[mtype] or ("type " .. mtype),
    buf(4, 2):uint(), buf(6, 2):uint() == 0 and "all" or tostring(buf(6, 2):uint()))
  local inner = nil
  if mtype == 1 and pay then  -- DATA: records
    info = info .. string.format(" seq=%d", buf(24, 4):uint())
    local off, names = 0, {}
    while off + 3 <= plen do
      local rtype, used = record(t, pay(off))
      table.insert(names, rec_types[rtype] or tostring(rtype))
      off = off + used
    end
    info = info .. " [" .. table.concat(names, ",") .. "]"
  elseif mtype == 2 then
    info = info .. string.format(" ack=%d", buf(28, 4):uint())
  elseif mtype == 3 and pay then  -- HEARTBEAT
    local n = pay(0, 1):uint()
    local mt = t:add(f.members, pay(0, 1))
    local seen = {}
    for i = 0, n - 1 do
      mt:add(f.member, pay(1 + 2 * i, 2)); table.insert(seen, pay(1 + 2 * i, 2):uint())
    end
    t:add(f.ready, pay(1 + 2 * n, 1))
    info = info .. " members {" .. table.concat(seen, ",") .. "}"
  elseif mtype == 4 and pay then  -- HOME_QUERY
    t:add(f.query, pay(0, 4)); t:add(f.ingress, pay(4, 1))
    info = info .. string.format(" query=%d", pay(0, 4):uint())
    inner = pay(5)
  elseif mtype == 5 and pay then  -- HOME_ANSWER
    local a = plen - 6 == 37 and 16 or 4  -- the key's family, by its length
    t:add(f.query, pay(0, 4)); t:add(f.home, pay(4, 2)); key(t, pay(6, 5 + 2 * a), f.conn, a)
    info = info .. string.format(" query=%d home=%d", pay(0, 4):uint(), pay(4, 2):uint())
  elseif mtype == 6 and pay then  -- FORWARD
    t:add(f.ingress, pay(0, 1))
    inner = pay(1)
  end
  t:add(f.mac, buf(HEADER_LEN + plen, MAC_LEN))
  local src, dst = tostring(pinfo.src), tostring(pinfo.dst)
  if inner then
    t:add(f.frame, inner)
    eth:call(inner:tvb("Forwarded packet"), pinfo, tree)  -- the packet itself, decoded
  end
  -- The columns describe the sync message, not the packet it carries.
  pinfo.cols.src:set(src); pinfo.cols.dst:set(dst)
  pinfo.cols.protocol:set("FWSYNC")
  pinfo.cols.info:clear_fence()
  pinfo.cols.info:set(info)
  return buf:len()
end

DissectorTable.get("udp.port"):add(PORT, p)
