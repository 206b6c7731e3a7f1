// cnn_tensor_mismatch, guarded: the buggy program under DAIFU_GUARD, with the data set's class
// count declared as the knob "num_classes". Repaired by the built-in tensor_mismatch surgery
// (class_count adapter): it widens the head fc2 in place from 5 to 10 outputs, keeping the
// rows it has learned, and the step is retried (the error comes before the update).
#include "common/case.h"
#include "workloads/cnn.h"

namespace cnn_tensor_mismatch::guarded {

int run(crash::Run& run) {
  auto data = crash::cnn::load();
  const auto phase_one = torch::nonzero(data.train.labels < 5).flatten();
  fashion_mnist::Sampler phase_one_sampler(phase_one.numel(), crash::cnn::kBatch, /*seed=*/2);
  const int64_t classes = std::get<0>(at::_unique(data.train.labels.index_select(0, phase_one))).numel();  // BUG
  crash::cnn::Net net(classes);
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(crash::cnn::kLearningRate));
  daifu::Session session(run.options());
  session.track("model", *net);
  session.track("optimizer", optimizer);
  session.knob<int64_t>("num_classes", 10);
  DAIFU_GUARD(session, step, 0, run.steps(crash::cnn::kSteps)) {
    const auto& batch = step.once("batch", [&] {
      const auto b = step.index() < 150
                         ? fashion_mnist::gather(data.train, phase_one.index_select(0, phase_one_sampler.indices(
                                                                                           step.index(), crash::cnn::kBatch)))
                         : crash::cnn::batch(data, step.index());
      return std::make_pair(b.images, b.labels);
    });
    optimizer.zero_grad();
    auto loss = torch::nll_loss(net->forward(batch.first), batch.second);
    loss.backward();
    optimizer.step();
    session.report("loss", loss.item<double>());
  };
  run.finish("accuracy", crash::cnn::accuracy(net, data.test), /*higher_is_better=*/true);
  return 0;
}

CRASH_PROGRAM("cnn_tensor_mismatch", Guarded, run);

}  // namespace cnn_tensor_mismatch::guarded
