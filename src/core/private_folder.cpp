#include "core/private_folder.h"

#include <daifu/errors.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace daifu::detail {
namespace {

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

}  // namespace

void check_private(const std::filesystem::path& path, const struct stat& st, const std::string& what) {
  if (st.st_uid != ::geteuid()) {
    throw Error("daifu: the " + what + " " + path.string() + " is owned by uid " + std::to_string(st.st_uid) +
                ", not by this process's user (uid " + std::to_string(::geteuid()) +
                "); daifu writes to, and takes patches and commands from, only what you own (run chown " +
                std::to_string(::geteuid()) + " " + path.string() + ", or choose another path)");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    throw Error("daifu: the " + what + " " + path.string() + " is writable by group or others (mode " +
                octal_mode(st.st_mode) + "); run chmod go-w " + path.string() +
                " so that nobody else can put files, code or commands into it");
  }
}

void check_private_folder(const std::filesystem::path& folder, const std::string& what) {
  struct stat st {};
  if (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error("daifu: the " + what + " " + folder.string() + " does not exist or is not a directory");
  }
  check_private(folder, st, what);
}

}  // namespace daifu::detail
