#include "patch/sha256.h"

#include <daifu/errors.h>

#include "core/regular_file.h"
#include "core/strings.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
    return to_hex(digest, length);
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
  std::string why;
  const int fd = open_regular_file(path, O_RDONLY, 0, &why);  // /dev/zero would be hashed forever
  if (fd < 0) throw Error("daifu: cannot hash " + path + ": the file " + why);
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } closer{fd};
  Sha256 sha;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("daifu: cannot read " + path + " to hash it: " + std::strerror(errno));
    if (n == 0) return sha.hex();
    sha.update(buffer, static_cast<std::size_t>(n));
  }
}

}  // namespace daifu::detail
