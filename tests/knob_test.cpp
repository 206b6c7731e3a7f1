// Knobs: the four types, journaled changes, stable addresses, type errors, values the journal
// could not carry (NaN, integers outside int64, strings that are not UTF-8).
#include <daifu/daifu.h>

#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <limits>
#include <string>

namespace knob_test {

using daifu::testing::events;
using daifu::testing::fresh_dir;

TEST(Knob, FourTypesWithGetConversionAndSet) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& batch = session.knob<int64_t>("batch_size", 64);
  auto& lr = session.knob("lr", 0.1);
  auto& scrub = session.knob("scrub", false);
  auto& mode = session.knob("mode", "skip");
  int64_t b = batch;
  EXPECT_EQ(b, 64);
  EXPECT_DOUBLE_EQ(lr.get(), 0.1);
  EXPECT_FALSE(scrub.get());
  EXPECT_EQ(mode.get(), "skip");
  batch.set(32, "test");
  lr.set(0.05);
  scrub.set(true);
  mode.set("scrub");
  EXPECT_EQ(batch.get(), 32);
  EXPECT_EQ(std::string(mode.type_name()), "string");
  EXPECT_EQ(lr.json(), "0.05");
}

TEST(Knob, SameNameGivesTheSameObjectAndAnotherTypeIsAnError) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& a = session.knob<int64_t>("batch_size", 64);
  auto& b = session.knob<int64_t>("batch_size", 999);
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(b.get(), 64);
  for (int i = 0; i < 100; ++i) session.knob<int64_t>("other" + std::to_string(i), i);
  EXPECT_EQ(&a, &session.knob<int64_t>("batch_size", 0));  // stable address
  EXPECT_THROW(session.knob<double>("batch_size", 1.0), daifu::Error);
  EXPECT_EQ(session.find_knob<int64_t>("nope"), nullptr);
  EXPECT_EQ(session.find_knob<int64_t>("batch_size"), &a);
  EXPECT_EQ(session.find_knob<double>("batch_size"), nullptr);  // another type
}

TEST(Knob, ChangesAreJournaledWithOldNewAndReasonButNotNoOps) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()));
    auto& batch = session.knob<int64_t>("batch_size", 64);
    batch.set(64, "unchanged");
    batch.set(16, "memory");
  }
  const auto created = events(wp, "knob_created");
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0]["value"], 64);
  EXPECT_EQ(created[0]["type"], "int64");
  const auto changes = events(wp, "knob");
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0]["name"], "batch_size");
  EXPECT_EQ(changes[0]["before"], 64);
  EXPECT_EQ(changes[0]["after"], 16);
  EXPECT_EQ(changes[0]["reason"], "memory");
}

TEST(Knob, SetJsonChecksTheType) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& batch = session.knob<int64_t>("batch_size", 64);
  auto& lr = session.knob("lr", 0.1);
  batch.set_json("8", "cli");
  EXPECT_EQ(batch.get(), 8);
  lr.set_json("1", "cli");  // an integer is a fine double
  EXPECT_DOUBLE_EQ(lr.get(), 1.0);
  EXPECT_THROW(batch.set_json("\"eight\"", "cli"), daifu::Error);
  EXPECT_THROW(batch.set_json("8.5", "cli"), daifu::Error);
  EXPECT_THROW(batch.set_json("{oops", "cli"), daifu::Error);
  EXPECT_EQ(batch.get(), 8);
}

TEST(Knob, BoundsRefuseValuesOutsideAndKeepTheOldValue) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& batch = session.knob<int64_t>("batch_size", 64).min(8).max(256);
  EXPECT_EQ(batch.lower(), 8);
  EXPECT_EQ(batch.upper(), 256);
  batch.set(8, "floor");
  try {
    batch.set(4, "below the floor");
    FAIL() << "expected daifu::Error";
  } catch (const daifu::Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"batch_size\" must stay in [8, 256]; 4 is outside"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(batch.set_json("512", "cli"), daifu::Error);
  EXPECT_EQ(batch.get(), 8);
  EXPECT_THROW(batch.min(16), daifu::Error);  // the current value would be outside
  auto& lr = session.knob("lr", 0.1).min(0.0);
  EXPECT_THROW(lr.set(-1.0), daifu::Error);
}

// JSON has no NaN or infinity (nlohmann writes null, which no resume can set) and only UTF-8
// strings: such values are refused when set, and the knob keeps its value.
TEST(Knob, NanInfinityAndNonUtf8AreRefusedBecauseTheJournalCouldNotCarryThem) {
  const auto wp = fresh_dir();
  {
    daifu::Session session(daifu::Options().workplace(wp.string()));
    auto& lr = session.knob("lr", 0.1).min(0.0).max(1.0);
    for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
      try {
        lr.set(bad, "hostile");
        FAIL() << "expected daifu::Error for " << bad;
      } catch (const daifu::Error& e) {
        EXPECT_NE(std::string(e.what()).find("knob \"lr\" cannot be"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("no NaN or infinity"), std::string::npos) << e.what();
      }
      EXPECT_DOUBLE_EQ(lr.get(), 0.1);
    }
    EXPECT_THROW(lr.set_json("1e999", "cli"), daifu::Error);  // parses as infinity
    EXPECT_THROW(session.knob("momentum", std::nan("")), daifu::Error);
    EXPECT_EQ(session.find_knob<double>("momentum"), nullptr);
    auto& mode = session.knob("mode", "skip");
    EXPECT_THROW(mode.set("\xff\xfe not UTF-8"), daifu::Error);
    EXPECT_EQ(mode.get(), "skip");
  }
  for (const auto& line : events(wp)) {
    for (const char* field : {"value", "before", "after"}) {
      if (line.contains(field)) EXPECT_FALSE(line[field].is_null()) << line.dump();
    }
  }
}

// nlohmann reads integers of 2^63 and above as unsigned; get<int64_t>() would wrap them (2^64-1
// to -1, 2^63 to INT64_MIN).
TEST(Knob, IntegersOutsideInt64AreRefusedAndTheEdgesAreKept) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& batch = session.knob<int64_t>("batch_size", 64);
  for (const char* bad : {"18446744073709551615", "9223372036854775808", "-9223372036854775809"}) {
    try {
      batch.set_json(bad, "cli");
      FAIL() << "expected daifu::Error for " << bad;
    } catch (const daifu::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot set it to " + std::string(bad)), std::string::npos) << e.what();
    }
    EXPECT_EQ(batch.get(), 64);
  }
  batch.set_json("9223372036854775807", "cli");
  EXPECT_EQ(batch.get(), std::numeric_limits<int64_t>::max());
  batch.set_json("-9223372036854775808", "cli");
  EXPECT_EQ(batch.get(), std::numeric_limits<int64_t>::min());
}

// Whatever a knob accepts, its JSON sets another knob (a resume, a replay) to the same value.
TEST(Knob, EveryAcceptedValueRoundTripsThroughItsJson) {
  daifu::Session session(daifu::Options().workplace(fresh_dir().string()));
  auto& i = session.knob<int64_t>("i", 0);
  auto& i2 = session.knob<int64_t>("i2", 0);
  for (int64_t v : {std::numeric_limits<int64_t>::min(), int64_t{-1}, std::numeric_limits<int64_t>::max()}) {
    i.set(v);
    i2.set_json(i.json(), "resume");
    EXPECT_EQ(i2.get(), v);
  }
  auto& d = session.knob("d", 0.5);
  auto& d2 = session.knob("d2", 0.5);
  for (double v : {std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max(), -0.1, 1.0 / 3.0}) {
    d.set(v);
    d2.set_json(d.json(), "resume");
    EXPECT_EQ(d2.get(), v);  // bit for bit
  }
  auto& s = session.knob("s", "");
  auto& s2 = session.knob("s2", "");
  s.set("naïve \"quoted\"\n\ttab \u2603");
  s2.set_json(s.json(), "resume");
  EXPECT_EQ(s2.get(), s.get());
}

}  // namespace knob_test
