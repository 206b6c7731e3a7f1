// Classification of REAL libtorch and standard-library errors into the ten FailureKinds.
#include <daifu/classifier.h>
#include <daifu/errors.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <system_error>

namespace classifier_test {

using daifu::FailureKind;

template <class F>
daifu::Failure classify_thrown(F&& f, const daifu::Classifier& c = daifu::Classifier()) {
  try {
    f();
  } catch (...) {
    return c.classify(std::current_exception());
  }
  ADD_FAILURE() << "expected an exception";
  return {};
}

TEST(Classifier, ApiMisuseFromScalarConversionOfAVector) {
  auto f = classify_thrown([] { torch::ones({4}).item<float>(); });
  EXPECT_EQ(f.kind, FailureKind::ApiMisuse) << f.message;
  EXPECT_NE(f.message.find("cannot be converted to Scalar"), std::string::npos) << f.message;
}

TEST(Classifier, ApiMisuseFromBackwardOnATensorWithoutGrad) {
  auto f = classify_thrown([] { torch::ones({2}).sum().backward(); });
  EXPECT_EQ(f.kind, FailureKind::ApiMisuse) << f.message;
}

TEST(Classifier, AFaultDetectedCarriesItsDetectorTyped) {
  auto f = classify_thrown([] { throw daifu::FaultDetected("grad_spike", "gradient norm 1e17 against a median of 1"); });
  EXPECT_EQ(f.kind, FailureKind::NumericFault);
  EXPECT_EQ(f.detector, "grad_spike");
  EXPECT_EQ(f.exception_type, "daifu::FaultDetected");
  EXPECT_TRUE(classify_thrown([] { throw std::runtime_error("daifu detector grad_spike: spoofed"); }).detector.empty());
}

TEST(Classifier, TensorMismatchFromARealMatmul) {
  torch::nn::Linear layer(10, 5);
  auto f = classify_thrown([&] { layer->forward(torch::ones({4, 7})); });
  EXPECT_EQ(f.kind, FailureKind::TensorMismatch) << f.message;
  EXPECT_EQ(f.exception_type, "c10::Error");
  EXPECT_NE(f.message.find("mat1 and mat2 shapes cannot be multiplied (4x7 and 10x5)"), std::string::npos);
}

TEST(Classifier, TensorMismatchFromBroadcastAndDtypeAndTarget) {
  EXPECT_EQ(classify_thrown([] { torch::ones({2, 3}) + torch::ones({2, 4}); }).kind, FailureKind::TensorMismatch);
  auto dtype = classify_thrown([] { torch::mm(torch::ones({2, 2}), torch::ones({2, 2}, torch::kDouble)); });
  EXPECT_EQ(dtype.kind, FailureKind::TensorMismatch) << dtype.message;
  // The seed-000 bug: a 1-wide classifier head under a 10-class loss.
  auto target = classify_thrown([] {
    torch::nll_loss(torch::log_softmax(torch::ones({4, 1}), 1), torch::tensor({3, 7, 1, 9}));
  });
  EXPECT_EQ(target.kind, FailureKind::TensorMismatch) << target.message;
}

TEST(Classifier, IndexErrorIsTensorMismatch) {
  auto f = classify_thrown([] { torch::ones({3}).index_select(0, torch::tensor({int64_t{7}})); });
  EXPECT_EQ(f.kind, FailureKind::TensorMismatch) << f.exception_type << ": " << f.message;
}

TEST(Classifier, OutOfMemoryFromARealFailedAllocation) {
  auto f = classify_thrown([] { torch::empty({int64_t{1} << 50}, torch::kFloat); });
  EXPECT_EQ(f.kind, FailureKind::OutOfMemory) << f.message;
  EXPECT_NE(f.message.find("DefaultCPUAllocator"), std::string::npos) << f.message;
}

TEST(Classifier, OutOfMemoryFromCudaMessageAndBadAlloc) {
  auto cuda = classify_thrown([] {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory. Tried to allocate 20.00 GiB");
  });
  EXPECT_EQ(cuda.kind, FailureKind::OutOfMemory);
  EXPECT_EQ(cuda.matched_by, "type:c10::OutOfMemoryError");
  EXPECT_EQ(classify_thrown([] { throw std::bad_alloc(); }).kind, FailureKind::OutOfMemory);
}

TEST(Classifier, DeviceContentionFromCudaBusyMessage) {
  // No GPU here: the message is CUDA's own, raised the way libtorch raises it.
  auto f = classify_thrown([] { TORCH_CHECK(false, "CUDA error: all CUDA-capable devices are busy or unavailable"); });
  EXPECT_EQ(f.kind, FailureKind::DeviceContention);
}

TEST(Classifier, PathProblemFromARealSaveIntoAMissingFolder) {
  auto f = classify_thrown([] { torch::save(torch::ones({2}), "/nonexistent-daifu-dir/sub/x.pt"); });
  EXPECT_EQ(f.kind, FailureKind::PathProblem) << f.message;
  EXPECT_NE(f.message.find("does not exist"), std::string::npos) << f.message;
}

TEST(Classifier, PathProblemFromARealLoadAndFilesystem) {
  auto load = classify_thrown([] {
    torch::Tensor t;
    torch::load(t, "/nonexistent-daifu-file.pt");
  });
  EXPECT_EQ(load.kind, FailureKind::PathProblem) << load.message;
  auto fs = classify_thrown([] { (void)std::filesystem::file_size("/nonexistent-daifu-file"); });
  EXPECT_EQ(fs.kind, FailureKind::PathProblem) << fs.message;
  EXPECT_EQ(fs.exception_type, "std::filesystem::__cxx11::filesystem_error");
}

TEST(Classifier, ExceptionalDataFromARealNanIntoBinaryCrossEntropy) {
  auto f = classify_thrown([] {
    auto x = torch::tensor({0.5f, std::numeric_limits<float>::quiet_NaN()});
    torch::binary_cross_entropy(x, torch::ones({2}));
  });
  EXPECT_EQ(f.kind, FailureKind::ExceptionalData) << f.message;
}

// A program's own NaN checks, as PyTorch's cpp/mnist writes them (AT_ASSERT is
// TORCH_INTERNAL_ASSERT) or with TORCH_CHECK and no message: the condition text is the message.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST(Classifier, ExceptionalDataFromAProgramsOwnNanAssert) {
  const auto loss = torch::tensor(std::numeric_limits<float>::quiet_NaN());
  auto f = classify_thrown([&] { AT_ASSERT(!std::isnan(loss.item<float>())); });
  EXPECT_EQ(f.kind, FailureKind::ExceptionalData) << f.message;
  f = classify_thrown([&] { TORCH_CHECK(std::isfinite(loss.item<float>())); });
  EXPECT_EQ(f.kind, FailureKind::ExceptionalData) << f.message;
  const auto overflowed = torch::tensor(std::numeric_limits<float>::infinity());
  f = classify_thrown([&] { TORCH_CHECK(!torch::isinf(overflowed).any().item<bool>()); });
  EXPECT_EQ(f.kind, FailureKind::ExceptionalData) << f.message;
  // An assert about something else, and a check whose own message is used, stay what they were.
  f = classify_thrown([&] { AT_ASSERT(loss.dim() == 1); });
  EXPECT_EQ(f.kind, FailureKind::Unknown) << f.message;
  f = classify_thrown([&] { TORCH_CHECK(!std::isnan(loss.item<float>()), "the loss went bad"); });
  EXPECT_EQ(f.kind, FailureKind::Unknown) << f.message;
}
#pragma GCC diagnostic pop

TEST(Classifier, TransientRuntimeFromARealEagain) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK), 0);
  auto f = classify_thrown([&] {
    char c;
    if (::read(fds[0], &c, 1) < 0) throw std::system_error(errno, std::generic_category(), "read from loader pipe");
  });
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_EQ(f.kind, FailureKind::TransientRuntime) << f.message;
  EXPECT_EQ(f.matched_by, "type:std::system_error(errno)");
}

// c10d's store: a key that never comes, and a server that is not there. LibTorch 2.x throws
// the typed c10::DistStoreError / c10::DistNetworkError; 1.13 a c10::Error whose message the
// table knows.
TEST(Classifier, TransientRuntimeFromARealStoreTimeoutAndRefusedConnection) {
  c10d::TCPStoreOptions server_options;
  server_options.port = 0;  // any free port
  server_options.isServer = true;
  server_options.waitWorkers = false;
  server_options.timeout = std::chrono::seconds(1);  // 1.13 counts connect timeouts in whole seconds
  c10d::TCPStore server("127.0.0.1", server_options);
  auto timeout = classify_thrown([&] { server.get("a key nobody sets"); });
  EXPECT_EQ(timeout.kind, FailureKind::TransientRuntime) << timeout.exception_type << ": " << timeout.message;

  c10d::TCPStoreOptions client_options;
  client_options.isServer = false;
  client_options.timeout = std::chrono::seconds(1);
  auto refused = classify_thrown([&] {
    // A port that was just free: nothing listens there.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    client_options.port = ntohs(addr.sin_port);
    c10d::TCPStore client("127.0.0.1", client_options);
  });
  EXPECT_EQ(refused.kind, FailureKind::TransientRuntime) << refused.exception_type << ": " << refused.message;
#if TORCH_VERSION_MAJOR >= 2
  EXPECT_EQ(timeout.matched_by, "type:c10::DistStoreError") << timeout.exception_type;
  EXPECT_EQ(refused.matched_by, "type:c10::DistNetworkError") << refused.exception_type;
#endif
}

TEST(Classifier, NumericFaultFromRealAnomalyModeAndLinalg) {
  auto nan = classify_thrown([] {
    auto x = torch::full({1}, -1.0, torch::requires_grad());
    torch::autograd::DetectAnomalyGuard anomaly;
    torch::sqrt(x).sum().backward();
  });
  EXPECT_EQ(nan.kind, FailureKind::NumericFault) << nan.message;
  auto linalg = classify_thrown([] { torch::linalg_cholesky(-torch::eye(3)); });
  EXPECT_EQ(linalg.kind, FailureKind::NumericFault) << linalg.exception_type << ": " << linalg.message;
}

TEST(Classifier, FatalForContextPoisoningCudaErrorsEvenWithUserPatterns) {
  daifu::Classifier c;
  c.add_pattern("CUDA error", FailureKind::TransientRuntime);
  auto f = classify_thrown([] { TORCH_CHECK(false, "CUDA error: an illegal memory access was encountered"); }, c);
  EXPECT_EQ(f.kind, FailureKind::Fatal);
}

TEST(Classifier, UnknownForOddExceptions) {
  auto i = classify_thrown([] { throw 42; });
  EXPECT_EQ(i.kind, FailureKind::Unknown);
  EXPECT_EQ(i.exception_type, "int");
  EXPECT_EQ(classify_thrown([] { throw std::runtime_error("the flux capacitor drifted"); }).kind,
            FailureKind::Unknown);
}

TEST(Classifier, UserPatternsComeBeforeTypesAndBuiltins) {
  daifu::Classifier c;
  c.add_pattern("flux capacitor", FailureKind::TransientRuntime);
  EXPECT_EQ(classify_thrown([] { throw std::runtime_error("the flux capacitor drifted"); }, c).kind,
            FailureKind::TransientRuntime);
  EXPECT_THROW(c.add_pattern("([unclosed", FailureKind::Unknown), daifu::Error);
}

// std::regex recurses per character a `.*` runs over: a 100 KB message that reaches the pattern's
// `.*` once overflowed the stack (SIGSEGV). Regexes see the first 1024 characters; literal
// patterns, the whole message.
TEST(Classifier, AHugeMessageIsClassifiedWithoutOverflowingTheStack) {
  const std::string tail(100000, 'x');
  auto builtin = classify_thrown([&] { throw std::runtime_error("Parent directory /no/such does not exist, " + tail); });
  EXPECT_EQ(builtin.kind, FailureKind::PathProblem);
  EXPECT_EQ(builtin.matched_by, "pattern:parent directory .* does not exist");
  auto late = classify_thrown([&] { throw std::runtime_error(tail + " parent directory /no/such does not exist"); });
  EXPECT_EQ(late.kind, FailureKind::Unknown);  // beyond the regex's window
  daifu::Classifier c;
  c.add_pattern("flux .* drifted", FailureKind::TransientRuntime);
  c.add_pattern("warp core", FailureKind::DeviceContention);  // a literal: searched everywhere
  EXPECT_EQ(classify_thrown([&] { throw std::runtime_error("flux capacitor drifted " + tail); }, c).kind,
            FailureKind::TransientRuntime);
  EXPECT_EQ(classify_thrown([&] { throw std::runtime_error(tail + " warp core breach"); }, c).kind,
            FailureKind::DeviceContention);
}

TEST(Classifier, MessageHasNoLibtorchBacktraceAndThrowSiteIsCaptured) {
  auto f = classify_thrown([] { torch::ones({3}).view({2, 2}); });
  EXPECT_EQ(f.message.find("Exception raised from"), std::string::npos) << f.message;
  ASSERT_FALSE(f.throw_site.empty());
  const std::string stack = daifu::symbolize_stack(f.throw_site);
  EXPECT_NE(stack.find("#0 "), std::string::npos);
}

TEST(Classifier, KindNamesRoundTrip) {
  EXPECT_EQ(daifu::all_failure_kinds().size(), 10u);
  for (auto kind : daifu::all_failure_kinds()) {
    EXPECT_EQ(daifu::failure_kind_from_string(daifu::to_string(kind)), kind);
  }
  EXPECT_EQ(daifu::to_string(FailureKind::OutOfMemory), "out_of_memory");
  EXPECT_FALSE(daifu::failure_kind_from_string("nope").has_value());
}

}  // namespace classifier_test
