// DAIFU_API marks the symbols that libdaifu exports; the library is built with hidden
// visibility, so everything not marked stays internal.
#pragma once

#define DAIFU_API __attribute__((visibility("default")))
