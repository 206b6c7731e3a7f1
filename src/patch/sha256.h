// SHA-256 from OpenSSL's libcrypto (EVP), for the journal line that records which patch was
// loaded and for telling a patch apart from the one a journal names.
#pragma once

#include <string>

namespace daifu::detail {

/// Lower-case hex SHA-256 (FIPS 180-4) of `bytes`.
std::string sha256_hex(const std::string& bytes);

/// SHA-256 of a file's content, read in pieces; throws daifu::Error if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace daifu::detail
