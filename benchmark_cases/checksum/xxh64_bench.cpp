// XXH64 from Debian's libxxhash against the hand-written XXH64 daifu used until a5e5e75
// (old_impl::checksum64, built by run.sh from git), side by side in one process: 3 runs, each
// the best of 5 passes over a 256 MB buffer. Prints each run's speeds and their ratio.
#include <xxhash.h>

#include "snapshot/checksum.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  std::vector<unsigned char> buffer(std::size_t{256} << 20);
  for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  using Clock = std::chrono::steady_clock;
  for (int run = 1; run <= 3; ++run) {
    double hand_s = 1e9, library_s = 1e9;
    bool equal = true;
    for (int pass = 0; pass < 5; ++pass) {
      const auto t0 = Clock::now();
      const uint64_t library = XXH64(buffer.data(), buffer.size(), 0);
      const auto t1 = Clock::now();
      const uint64_t hand = old_impl::checksum64(buffer.data(), buffer.size(), 0);
      const auto t2 = Clock::now();
      library_s = std::min(library_s, std::chrono::duration<double>(t1 - t0).count());
      hand_s = std::min(hand_s, std::chrono::duration<double>(t2 - t1).count());
      equal = equal && library == hand;
    }
    std::printf("run %d: hand-written %.2f GB/s, libxxhash %.2f GB/s, ratio libxxhash/hand-written %.2f, same hash: %s\n",
                run, buffer.size() / hand_s / 1e9, buffer.size() / library_s / 1e9, hand_s / library_s,
                equal ? "yes" : "NO");
  }
  return 0;
}
