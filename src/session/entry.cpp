#include <daifu/classifier.h>
#include <daifu/entry.h>
#include <daifu/errors.h>

#include "journal/events.h"
#include "journal/journal.h"
#include "journal/workplace.h"

#include <cstdio>
#include <exception>
#include <mutex>

namespace daifu {
namespace {

std::mutex g_entry_mutex;
std::string g_entry_workplace;
std::terminate_handler g_previous_terminate = nullptr;

// Journals an event about the exception that is ending the program, with a failure report.
void record_ending(const std::string& workplace, std::string_view event, std::exception_ptr error) noexcept {
  try {
    detail::Journal journal(workplace, /*echo=*/false);
    nlohmann::json line = {{"event", event}, {"step", -1}};
    std::string summary = "no active exception";
    if (error) {
      const Failure failure = Classifier().classify(error);
      line.update(detail::Journal::to_json(failure));
      line["event"] = event;
      line["step"] = -1;
      const auto [number, path] = journal.reserve_report();
      line["report"] = path.string();
      journal.write_report(path, line, failure.throw_site, /*synchronous=*/true);
      summary = std::string(to_string(failure.kind)) + ", " + failure.exception_type + ": " + failure.message +
                " (report: " + path.string() + ")";
    }
    journal.write(line);
    // A Session in the program has written its own "Program End" already (if there was one).
    journal.record((event == detail::event::uncaught ? "Uncaught exception, run_main returns 1: "
                                                     : "Program End (terminate): ") +
                   summary);
    std::fprintf(stderr, "daifu: the program ended by %s: %s\n", std::string(event).c_str(), summary.c_str());
  } catch (...) {
    std::fprintf(stderr, "daifu: could not record the program's end in %s\n", workplace.c_str());
  }
}

[[noreturn]] void on_terminate() {
  std::string workplace;
  std::terminate_handler previous = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_entry_mutex);
    workplace = g_entry_workplace;
    previous = g_previous_terminate;
  }
  if (!workplace.empty()) record_ending(workplace, detail::event::terminate, std::current_exception());
  if (previous != nullptr) previous();
  std::abort();
}

}  // namespace

int run_main(const std::string& workplace, const std::function<int()>& fn) {
  try {
    detail::prepare_workplace(workplace);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  {
    std::lock_guard<std::mutex> lock(g_entry_mutex);
    g_entry_workplace = workplace;
    g_previous_terminate = std::set_terminate(&on_terminate);
  }
  struct Restore {
    ~Restore() {
      std::lock_guard<std::mutex> lock(g_entry_mutex);
      std::set_terminate(g_previous_terminate);
      g_entry_workplace.clear();
    }
  } restore;
  try {
    return fn();
  } catch (...) {
    record_ending(workplace, detail::event::uncaught, std::current_exception());
    return 1;
  }
}

}  // namespace daifu
