#include "common/ssh_key.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <cctype>
#include <memory>

#include "common/pki.h"

namespace kato {

namespace {

// An SSH wire-format string: a 32-bit big-endian length, then the bytes.
void PutString(std::string& out, const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((n >> shift) & 0xff);
  out += s;
}

}  // namespace

Result<SshKeyPair> CreateSshKey(const std::string& comment) {
  for (char c : comment)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '@'))
      return Err("an SSH key comment takes letters, digits and -_.@ only, not '" + comment + "'");
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"), EVP_PKEY_free);
  if (!key) return Err("cannot generate an EC P-256 key");
  // The public point, uncompressed (0x04 || X || Y), as RFC 5656 wants it.
  unsigned char point[65];
  size_t len = 0;
  if (EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                      sizeof point, &len) != 1 ||
      len != sizeof point || point[0] != 0x04)
    return Err("cannot read the new key's public point");
  std::string blob;
  PutString(blob, "ecdsa-sha2-nistp256");
  PutString(blob, "nistp256");
  PutString(blob, std::string(reinterpret_cast<char*>(point), len));
  SshKeyPair out;
  out.public_line = "ecdsa-sha2-nistp256 " + Base64Encode(blob);
  if (!comment.empty()) out.public_line += " " + comment;
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || PEM_write_bio_PKCS8PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                            nullptr) != 1)
    return Err("cannot write the new key as PEM");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  out.private_pem.assign(data, static_cast<size_t>(n));
  return out;
}

}  // namespace kato
