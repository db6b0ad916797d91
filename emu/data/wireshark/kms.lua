-- kms.lua: Wireshark dissector for KMS (Windows volume activation) inside DCE/RPC.
--
-- Part of emu (packet-level KMS emulator). Wireshark's DCE/RPC dissector frames the PDUs
-- (heuristically on any TCP port, or with "Decode As ... DCERPC") and leaves the
-- RequestActivation (interface 51c82175-844e-4750-b0d8-ec255555bc06, opnum 0) stub as
-- "Stub data". This post-dissector names the KMS fields inside that stub:
-- the NDR32/NDR64 stub (sizes, referent, HRESULT), the request base (docs/kms-wire-protocol.md)
-- and the response base (4.3), and the v4 MAC, v5/v6 IV and v6 HwId / HMAC.
--
-- v5 and v6 messages are encrypted with public keys (docs/kms-wire-protocol.md): AES-128-CBC for v5, and for v6
-- the same cipher with three bytes of the expanded key changed. Wireshark 4.0's Lua has no
-- cipher, so AES-128 decryption is implemented below with bit32 (Lua 5.2).
--
-- Install: `emu wireshark install` (copies this file into the personal plugins folder), or run
-- once with `tshark -X lua_script:kms.lua -r capture.pcap -Y kms`.

-- A second copy (one installed in the plugins folder and one given with -X lua_script:, say) must
-- not stop Wireshark with "there cannot be two protocols with the same description": the copy that
-- loads second says so once and steps aside.
local made, kms = pcall(Proto, "kms", "KMS Volume Activation")
if not made then
  local note = "emu kms.lua: a KMS dissector is already loaded; this copy is not used"
  if type(warn) == "function" then warn(note) else print(note) end
  return
end

local LICENSE = {
  [0] = "Unlicensed", [1] = "Licensed", [2] = "OOB grace", [3] = "OOT grace",
  [4] = "Non-genuine grace", [5] = "Notification", [6] = "Extended grace",
}

local f = {
  direction = ProtoField.string("kms.direction", "Direction"),
  ndr = ProtoField.uint8("kms.ndr", "NDR transfer syntax (32 or 64)"),
  stub_size = ProtoField.uint64("kms.stub.size", "requestSize / responseSize"),
  referent = ProtoField.uint64("kms.stub.referent_id", "Referent ID", base.HEX),
  max_count = ProtoField.uint64("kms.stub.max_count", "Max count"),
  hresult = ProtoField.uint32("kms.hresult", "HRESULT", base.HEX),
  version = ProtoField.string("kms.version", "Protocol version"),
  major = ProtoField.uint16("kms.major", "Major version"),
  minor = ProtoField.uint16("kms.minor", "Minor version"),
  iv = ProtoField.bytes("kms.iv", "IV"),
  decrypted = ProtoField.bool("kms.decrypted", "Decrypted"),
  vm_info = ProtoField.uint32("kms.vm_info", "VMInfo"),
  license_status = ProtoField.uint32("kms.license_status", "LicenseStatus", base.DEC, LICENSE),
  binding_expiration = ProtoField.uint32("kms.binding_expiration", "BindingExpiration (minutes)"),
  app_id = ProtoField.guid("kms.app_id", "ApplicationID"),
  sku_id = ProtoField.guid("kms.sku_id", "ActivationID (SKU)"),
  kms_id = ProtoField.guid("kms.kms_id", "KMSCountedID"),
  cmid = ProtoField.guid("kms.cmid", "ClientMachineID (CMID)"),
  required_count = ProtoField.uint32("kms.required_count", "RequiredClientCount"),
  client_time = ProtoField.absolute_time("kms.client_time", "ClientTime", base.UTC),
  client_time_raw = ProtoField.uint64("kms.client_time_raw", "ClientTime (FILETIME)"),
  previous_cmid = ProtoField.guid("kms.previous_cmid", "PreviousClientMachineID"),
  workstation = ProtoField.string("kms.workstation", "WorkstationName"),
  mac = ProtoField.bytes("kms.mac", "V4 MAC"),
  pid_size = ProtoField.uint32("kms.pid_size", "PIDSize"),
  epid = ProtoField.string("kms.epid", "KmsPID (ePID)"),
  count = ProtoField.uint32("kms.count", "CurrentCount"),
  activation_interval = ProtoField.uint32("kms.activation_interval", "VLActivationInterval (minutes)"),
  renewal_interval = ProtoField.uint32("kms.renewal_interval", "VLRenewalInterval (minutes)"),
  random_xored_ivs = ProtoField.bytes("kms.random_xored_ivs", "RandomXoredIVs"),
  hash = ProtoField.bytes("kms.hash", "Hash"),
  hwid = ProtoField.bytes("kms.hwid", "HwId"),
  xored_ivs = ProtoField.bytes("kms.xored_ivs", "XoredIVs"),
  hmac = ProtoField.bytes("kms.hmac", "HMAC"),
}
local fl = {}
for _, v in pairs(f) do fl[#fl + 1] = v end
kms.fields = fl

local ef_malformed = ProtoExpert.new("kms.malformed", "KMS message does not decode", expert.group.MALFORMED, expert.severity.WARN)
kms.experts = { ef_malformed }

local fx_stub = Field.new("dcerpc.stub_data")
local fx_ptype = Field.new("dcerpc.pkt_type")

-- ---------------------------------------------------------------------------------------------
-- AES-128 decryption (FIPS-197 inverse cipher) with bit32; v6 tweaks the expanded key.

local band, bxor, lshift, rshift = bit32.band, bit32.bxor, bit32.lshift, bit32.rshift

local SBOX = {
  0x63, 0x7c, 0x77, 0x7b, 0xf2, 0x6b, 0x6f, 0xc5, 0x30, 0x01, 0x67, 0x2b, 0xfe, 0xd7, 0xab, 0x76,
  0xca, 0x82, 0xc9, 0x7d, 0xfa, 0x59, 0x47, 0xf0, 0xad, 0xd4, 0xa2, 0xaf, 0x9c, 0xa4, 0x72, 0xc0,
  0xb7, 0xfd, 0x93, 0x26, 0x36, 0x3f, 0xf7, 0xcc, 0x34, 0xa5, 0xe5, 0xf1, 0x71, 0xd8, 0x31, 0x15,
  0x04, 0xc7, 0x23, 0xc3, 0x18, 0x96, 0x05, 0x9a, 0x07, 0x12, 0x80, 0xe2, 0xeb, 0x27, 0xb2, 0x75,
  0x09, 0x83, 0x2c, 0x1a, 0x1b, 0x6e, 0x5a, 0xa0, 0x52, 0x3b, 0xd6, 0xb3, 0x29, 0xe3, 0x2f, 0x84,
  0x53, 0xd1, 0x00, 0xed, 0x20, 0xfc, 0xb1, 0x5b, 0x6a, 0xcb, 0xbe, 0x39, 0x4a, 0x4c, 0x58, 0xcf,
  0xd0, 0xef, 0xaa, 0xfb, 0x43, 0x4d, 0x33, 0x85, 0x45, 0xf9, 0x02, 0x7f, 0x50, 0x3c, 0x9f, 0xa8,
  0x51, 0xa3, 0x40, 0x8f, 0x92, 0x9d, 0x38, 0xf5, 0xbc, 0xb6, 0xda, 0x21, 0x10, 0xff, 0xf3, 0xd2,
  0xcd, 0x0c, 0x13, 0xec, 0x5f, 0x97, 0x44, 0x17, 0xc4, 0xa7, 0x7e, 0x3d, 0x64, 0x5d, 0x19, 0x73,
  0x60, 0x81, 0x4f, 0xdc, 0x22, 0x2a, 0x90, 0x88, 0x46, 0xee, 0xb8, 0x14, 0xde, 0x5e, 0x0b, 0xdb,
  0xe0, 0x32, 0x3a, 0x0a, 0x49, 0x06, 0x24, 0x5c, 0xc2, 0xd3, 0xac, 0x62, 0x91, 0x95, 0xe4, 0x79,
  0xe7, 0xc8, 0x37, 0x6d, 0x8d, 0xd5, 0x4e, 0xa9, 0x6c, 0x56, 0xf4, 0xea, 0x65, 0x7a, 0xae, 0x08,
  0xba, 0x78, 0x25, 0x2e, 0x1c, 0xa6, 0xb4, 0xc6, 0xe8, 0xdd, 0x74, 0x1f, 0x4b, 0xbd, 0x8b, 0x8a,
  0x70, 0x3e, 0xb5, 0x66, 0x48, 0x03, 0xf6, 0x0e, 0x61, 0x35, 0x57, 0xb9, 0x86, 0xc1, 0x1d, 0x9e,
  0xe1, 0xf8, 0x98, 0x11, 0x69, 0xd9, 0x8e, 0x94, 0x9b, 0x1e, 0x87, 0xe9, 0xce, 0x55, 0x28, 0xdf,
  0x8c, 0xa1, 0x89, 0x0d, 0xbf, 0xe6, 0x42, 0x68, 0x41, 0x99, 0x2d, 0x0f, 0xb0, 0x54, 0xbb, 0x16,
}
local INV_SBOX = {
  0x52, 0x09, 0x6a, 0xd5, 0x30, 0x36, 0xa5, 0x38, 0xbf, 0x40, 0xa3, 0x9e, 0x81, 0xf3, 0xd7, 0xfb,
  0x7c, 0xe3, 0x39, 0x82, 0x9b, 0x2f, 0xff, 0x87, 0x34, 0x8e, 0x43, 0x44, 0xc4, 0xde, 0xe9, 0xcb,
  0x54, 0x7b, 0x94, 0x32, 0xa6, 0xc2, 0x23, 0x3d, 0xee, 0x4c, 0x95, 0x0b, 0x42, 0xfa, 0xc3, 0x4e,
  0x08, 0x2e, 0xa1, 0x66, 0x28, 0xd9, 0x24, 0xb2, 0x76, 0x5b, 0xa2, 0x49, 0x6d, 0x8b, 0xd1, 0x25,
  0x72, 0xf8, 0xf6, 0x64, 0x86, 0x68, 0x98, 0x16, 0xd4, 0xa4, 0x5c, 0xcc, 0x5d, 0x65, 0xb6, 0x92,
  0x6c, 0x70, 0x48, 0x50, 0xfd, 0xed, 0xb9, 0xda, 0x5e, 0x15, 0x46, 0x57, 0xa7, 0x8d, 0x9d, 0x84,
  0x90, 0xd8, 0xab, 0x00, 0x8c, 0xbc, 0xd3, 0x0a, 0xf7, 0xe4, 0x58, 0x05, 0xb8, 0xb3, 0x45, 0x06,
  0xd0, 0x2c, 0x1e, 0x8f, 0xca, 0x3f, 0x0f, 0x02, 0xc1, 0xaf, 0xbd, 0x03, 0x01, 0x13, 0x8a, 0x6b,
  0x3a, 0x91, 0x11, 0x41, 0x4f, 0x67, 0xdc, 0xea, 0x97, 0xf2, 0xcf, 0xce, 0xf0, 0xb4, 0xe6, 0x73,
  0x96, 0xac, 0x74, 0x22, 0xe7, 0xad, 0x35, 0x85, 0xe2, 0xf9, 0x37, 0xe8, 0x1c, 0x75, 0xdf, 0x6e,
  0x47, 0xf1, 0x1a, 0x71, 0x1d, 0x29, 0xc5, 0x89, 0x6f, 0xb7, 0x62, 0x0e, 0xaa, 0x18, 0xbe, 0x1b,
  0xfc, 0x56, 0x3e, 0x4b, 0xc6, 0xd2, 0x79, 0x20, 0x9a, 0xdb, 0xc0, 0xfe, 0x78, 0xcd, 0x5a, 0xf4,
  0x1f, 0xdd, 0xa8, 0x33, 0x88, 0x07, 0xc7, 0x31, 0xb1, 0x12, 0x10, 0x59, 0x27, 0x80, 0xec, 0x5f,
  0x60, 0x51, 0x7f, 0xa9, 0x19, 0xb5, 0x4a, 0x0d, 0x2d, 0xe5, 0x7a, 0x9f, 0x93, 0xc9, 0x9c, 0xef,
  0xa0, 0xe0, 0x3b, 0x4d, 0xae, 0x2a, 0xf5, 0xb0, 0xc8, 0xeb, 0xbb, 0x3c, 0x83, 0x53, 0x99, 0x61,
  0x17, 0x2b, 0x04, 0x7e, 0xba, 0x77, 0xd6, 0x26, 0xe1, 0x69, 0x14, 0x63, 0x55, 0x21, 0x0c, 0x7d,
}

local function sbox(x) return SBOX[x + 1] end
local function inv_sbox(x) return INV_SBOX[x + 1] end

local function xtime(b)
  b = lshift(b, 1)
  if band(b, 0x100) ~= 0 then b = bxor(b, 0x11b) end
  return b
end

local function gmul(a, b)
  local p = 0
  while b > 0 do
    if band(b, 1) ~= 0 then p = bxor(p, a) end
    a = xtime(a)
    b = rshift(b, 1)
  end
  return p
end

local MUL9, MUL11, MUL13, MUL14 = {}, {}, {}, {}
for i = 0, 255 do
  MUL9[i] = gmul(i, 9); MUL11[i] = gmul(i, 11); MUL13[i] = gmul(i, 13); MUL14[i] = gmul(i, 14)
end

-- expanded key: 176 bytes, index 0..175
local function expand_key(key)
  local w = {}
  for i = 0, 15 do w[i] = key[i + 1] end
  local rcon = 1
  for i = 16, 175, 4 do
    local t0, t1, t2, t3 = w[i - 4], w[i - 3], w[i - 2], w[i - 1]
    if i % 16 == 0 then
      t0, t1, t2, t3 = bxor(sbox(t1), rcon), sbox(t2), sbox(t3), sbox(t0)
      rcon = xtime(rcon)
    end
    w[i] = bxor(w[i - 16], t0); w[i + 1] = bxor(w[i - 15], t1)
    w[i + 2] = bxor(w[i - 14], t2); w[i + 3] = bxor(w[i - 13], t3)
  end
  return w
end

local KEY_V5 = { 0xCD, 0x7E, 0x79, 0x6F, 0x2A, 0xB2, 0x5D, 0xCB, 0x55, 0xFF, 0xC8, 0xEF, 0x83, 0x64, 0xC4, 0x70 }
local KEY_V6 = { 0xA9, 0x4A, 0x41, 0x95, 0xE2, 0x01, 0x43, 0x2D, 0x9B, 0xCB, 0x46, 0x04, 0x05, 0xD8, 0x4A, 0x21 }
local RK = { [5] = expand_key(KEY_V5), [6] = expand_key(KEY_V6) }
-- docs/kms-wire-protocol.md: the v6 schedule XORs expanded-key bytes 64, 96 and 128
RK[6][64] = bxor(RK[6][64], 0x73)
RK[6][96] = bxor(RK[6][96], 0x09)
RK[6][128] = bxor(RK[6][128], 0xE4)

local function decrypt_block(rk, b)
  -- b: table of 16 bytes (index 0..15, column-major as in FIPS-197); returns a new table
  local s = {}
  for i = 0, 15 do s[i] = bxor(b[i], rk[160 + i]) end
  for round = 9, 0, -1 do
    -- InvShiftRows + InvSubBytes
    local t = {}
    for c = 0, 3 do
      for r = 0, 3 do
        t[r + 4 * c] = inv_sbox(s[r + 4 * ((c - r) % 4)])
      end
    end
    -- AddRoundKey
    for i = 0, 15 do t[i] = bxor(t[i], rk[16 * round + i]) end
    if round > 0 then
      -- InvMixColumns
      for c = 0, 3 do
        local a0, a1, a2, a3 = t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]
        s[4 * c] = bxor(MUL14[a0], MUL11[a1], MUL13[a2], MUL9[a3])
        s[4 * c + 1] = bxor(MUL9[a0], MUL14[a1], MUL11[a2], MUL13[a3])
        s[4 * c + 2] = bxor(MUL13[a0], MUL9[a1], MUL14[a2], MUL11[a3])
        s[4 * c + 3] = bxor(MUL11[a0], MUL13[a1], MUL9[a2], MUL14[a3])
      end
    else
      s = t
    end
  end
  return s
end

-- CBC-decrypt `data` (ByteArray, whole blocks) with `iv` (ByteArray) for version 5 or 6
local function cbc_decrypt(version, iv, data)
  local rk = RK[version]
  local out = ByteArray.new()
  out:set_size(data:len())
  local prev = {}
  for i = 0, 15 do prev[i] = iv:get_index(i) end
  for off = 0, data:len() - 16, 16 do
    local blk = {}
    for i = 0, 15 do blk[i] = data:get_index(off + i) end
    local p = decrypt_block(rk, blk)
    for i = 0, 15 do out:set_index(off + i, bxor(p[i], prev[i])) end
    prev = blk
  end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- Field helpers

local FILETIME_UNIX = UInt64.new(3577643008, 27111902) -- 116444736000000000

local function add_filetime(tree, range)
  local ft = range:le_uint64()
  tree:add_le(f.client_time_raw, range)
  if ft >= FILETIME_UNIX then
    local rel = ft - FILETIME_UNIX
    local secs = (rel / 10000000):tonumber()
    local nsecs = (rel % 10000000):tonumber() * 100
    tree:add(f.client_time, range, NSTime.new(secs, nsecs))
  end
end

local function add_version(tree, tvb, off)
  local minor, major = tvb(off, 2):le_uint(), tvb(off + 2, 2):le_uint()
  tree:add(f.version, tvb(off, 4), string.format("%d.%d", major, minor))
  tree:add_le(f.minor, tvb(off, 2))
  tree:add_le(f.major, tvb(off + 2, 2))
  return major, minor
end

local function utf16z(range)
  local ok, text = pcall(function() return range:le_ustringz() end)
  if ok and text then return text end
  return ""
end

-- the 236-byte request base (docs/kms-wire-protocol.md)
local function add_request_base(tree, tvb, off)
  add_version(tree, tvb, off)
  tree:add_le(f.vm_info, tvb(off + 4, 4))
  tree:add_le(f.license_status, tvb(off + 8, 4))
  tree:add_le(f.binding_expiration, tvb(off + 12, 4))
  tree:add_le(f.app_id, tvb(off + 16, 16))
  tree:add_le(f.sku_id, tvb(off + 32, 16))
  tree:add_le(f.kms_id, tvb(off + 48, 16))
  tree:add_le(f.cmid, tvb(off + 64, 16))
  tree:add_le(f.required_count, tvb(off + 80, 4))
  add_filetime(tree, tvb(off + 84, 8))
  tree:add_le(f.previous_cmid, tvb(off + 92, 16))
  tree:add(f.workstation, tvb(off + 108, 128), utf16z(tvb(off + 108, 128)))
end

-- the response base (docs/kms-wire-protocol.md); returns the offset after it, or nil when truncated
local function add_response_base(tree, tvb, off)
  if tvb:len() < off + 8 then return nil end
  add_version(tree, tvb, off)
  local pid_size = tvb(off + 4, 4):le_uint()
  tree:add_le(f.pid_size, tvb(off + 4, 4))
  if tvb:len() < off + 8 + pid_size + 36 then return nil end
  tree:add(f.epid, tvb(off + 8, pid_size), utf16z(tvb(off + 8, pid_size)))
  local p = off + 8 + pid_size
  tree:add_le(f.cmid, tvb(p, 16))
  add_filetime(tree, tvb(p + 16, 8))
  tree:add_le(f.count, tvb(p + 24, 4))
  tree:add_le(f.activation_interval, tvb(p + 28, 4))
  tree:add_le(f.renewal_interval, tvb(p + 32, 4))
  return p + 36
end

local function decrypted_tvb(tvb, off, len, major, label)
  local iv = tvb(off + 4, 16):bytes()
  local usable = len - 20 - (len - 20) % 16
  if usable <= 0 then return nil end
  local plain = cbc_decrypt(major, iv, tvb(off + 20, usable):bytes())
  return plain:tvb(label)
end

local function dissect_request(tree, tvb, off, len, pinfo)
  if len < 4 then return end
  local major = tvb(off + 2, 2):le_uint()
  if major == 4 and len >= 252 then
    add_request_base(tree, tvb, off)
    tree:add(f.mac, tvb(off + 236, 16))
    tree:add(f.decrypted, false)
  elseif (major == 5 or major == 6) and len >= 20 + 240 then
    add_version(tree, tvb, off)
    tree:add(f.iv, tvb(off + 4, 16))
    local plain = decrypted_tvb(tvb, off, len, major, "Decrypted KMS request")
    tree:add(f.decrypted, true)
    local sub = tree:add(kms, plain(0, 236), "Request base (decrypted)")
    add_request_base(sub, plain, 0)
  else
    tree:add_proto_expert_info(ef_malformed, string.format("KMS request of version %d and %d bytes", major, len))
    return
  end
  pinfo.cols.info:append(string.format(" [KMS v%d request]", major))
end

local function dissect_response(tree, tvb, off, len, pinfo)
  if len < 4 then return end
  local major = tvb(off + 2, 2):le_uint()
  if major == 4 then
    local p = add_response_base(tree, tvb, off)
    if p and tvb:len() >= p + 16 then tree:add(f.mac, tvb(p, 16)) end
    tree:add(f.decrypted, false)
  elseif major == 5 or major == 6 then
    add_version(tree, tvb, off)
    tree:add(f.iv, tvb(off + 4, 16))
    local plain = decrypted_tvb(tvb, off, len, major, "Decrypted KMS response")
    if plain == nil then return end
    tree:add(f.decrypted, true)
    local sub = tree:add(kms, plain(), "Response (decrypted)")
    local p = add_response_base(sub, plain, 0)
    if p == nil or plain:len() < p + 48 then
      tree:add_proto_expert_info(ef_malformed, "decrypted KMS response is truncated")
      return
    end
    sub:add(f.random_xored_ivs, plain(p, 16))
    sub:add(f.hash, plain(p + 16, 32))
    if major == 6 and plain:len() >= p + 88 then
      sub:add(f.hwid, plain(p + 48, 8))
      sub:add(f.xored_ivs, plain(p + 56, 16))
      sub:add(f.hmac, plain(p + 72, 16))
    end
  else
    tree:add_proto_expert_info(ef_malformed, string.format("KMS response of version %d", major))
    return
  end
  pinfo.cols.info:append(string.format(" [KMS v%d response]", major))
end

-- NDR word size of a request stub: 4 (NDR32) or 8 (NDR64), or nil when it is not a KMS stub
local function request_word(tvb)
  local n = tvb:len()
  if n >= 12 and tvb(0, 4):le_uint() == tvb(4, 4):le_uint() and 8 + tvb(4, 4):le_uint() <= n then return 4 end
  if n >= 20 and tvb(0, 8):le_uint64() == tvb(8, 8):le_uint64() and tvb(4, 4):le_uint() == 0
    and 16 + tvb(8, 4):le_uint() <= n then return 8 end
  return nil
end

local function response_word(tvb)
  local n = tvb:len()
  for _, w in ipairs({ 4, 8 }) do
    if n >= 2 * w + 4 then
      local size = tvb(0, 4):le_uint()
      local referent = tvb(w, 4):le_uint()
      if w == 8 and (tvb(4, 4):le_uint() ~= 0) then size = -1 end
      if referent == 0 and size == 0 and n == 2 * w + 4 then return w end
      if referent ~= 0 and size >= 0 and n >= 3 * w + size + 4 and tvb(2 * w, 4):le_uint() == size then return w end
    end
  end
  return nil
end

local function dissect_stub(range, ptype, pinfo, tree)
  local tvb = range:tvb()
  if ptype == 0 then
    local w = request_word(tvb)
    if not w then return end
    local t = tree:add(kms, tvb(), "KMS RequestActivation request")
    t:add(f.direction, "request")
    t:add(f.ndr, w * 8)
    t:add_le(f.stub_size, tvb(0, w))
    t:add_le(f.max_count, tvb(w, w))
    local len = tvb(w, 4):le_uint()
    dissect_request(t, tvb, 2 * w, len, pinfo)
  elseif ptype == 2 then
    local w = response_word(tvb)
    if not w then return end
    local t = tree:add(kms, tvb(), "KMS RequestActivation response")
    t:add(f.direction, "response")
    t:add(f.ndr, w * 8)
    t:add_le(f.stub_size, tvb(0, w))
    t:add_le(f.referent, tvb(w, w))
    if tvb(w, 4):le_uint() == 0 then
      t:add_le(f.hresult, tvb(2 * w, 4))
      pinfo.cols.info:append(string.format(" [KMS error 0x%08X]", tvb(2 * w, 4):le_uint()))
      return
    end
    t:add_le(f.max_count, tvb(2 * w, w))
    local len = tvb(2 * w, 4):le_uint()
    local data_end = 3 * w + len
    local pad = (4 - data_end % 4) % 4
    -- vlmcsd and py-kms write the HRESULT before the pad (quirk Q10); with HRESULT 0 both read the same
    local hr_off = data_end + pad
    if pad > 0 and tvb(data_end + 4, pad):bytes():tohex() == string.rep("00", pad) and tvb(data_end, 4):le_uint() ~= 0 then
      hr_off = data_end
    end
    t:add_le(f.hresult, tvb(hr_off, 4))
    dissect_response(t, tvb, 3 * w, len, pinfo)
  end
end

function kms.dissector(tvb, pinfo, tree)
  local stubs = { fx_stub() }
  if #stubs == 0 then return end
  local ptypes = { fx_ptype() }
  for _, stub in ipairs(stubs) do
    -- the PDU a stub belongs to: the last packet type before it in the same data source
    local ptype = nil
    for _, p in ipairs(ptypes) do
      if p.offset <= stub.offset or ptype == nil then ptype = p.value end
    end
    if ptype ~= nil then
      local ok, err = pcall(dissect_stub, stub.range, ptype, pinfo, tree)
      if not ok then tree:add_proto_expert_info(ef_malformed, tostring(err)) end
    end
  end
end

register_postdissector(kms)
