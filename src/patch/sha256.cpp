#include "patch/sha256.h"

#include <daifu/errors.h>

#include <openssl/evp.h>

#include <fstream>
#include <memory>

namespace daifu::detail {
namespace {

struct FreeContext {
  void operator()(EVP_MD_CTX* context) const noexcept { EVP_MD_CTX_free(context); }
};

class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new()) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) fail("cannot start");
  }
  void update(const void* data, std::size_t n) {
    if (EVP_DigestUpdate(context_.get(), data, n) != 1) fail("cannot update");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest, &length) != 1) fail("cannot finish");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 0xf]);
    }
    return out;
  }

 private:
  [[noreturn]] static void fail(const char* what) { throw Error(std::string("daifu: OpenSSL SHA-256 ") + what); }
  std::unique_ptr<EVP_MD_CTX, FreeContext> context_;
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 sha;
  sha.update(bytes.data(), bytes.size());
  return sha.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("daifu: cannot read " + path + " to hash it");
  Sha256 sha;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) sha.update(buffer, static_cast<std::size_t>(in.gcount()));
  if (in.bad()) throw Error("daifu: cannot read " + path + " to hash it");
  return sha.hex();
}

}  // namespace daifu::detail
