#include "test_helpers.h"

#include "cerebra/data/task.h"
#include "cerebra/train/run.h"
#include "cerebra/train/spec.h"

namespace cerebra::test {

std::shared_ptr<Model> tiny_copy_model(const std::string& ffn_mult) {
  Config c;
  c.set("task", "copy", "test");
  c.set("d_model", "8", "test");
  c.set("n_heads", "2", "test");
  c.set("n_layers", "1", "test");
  c.set("ffn_mult", ffn_mult, "test");
  TaskInfo info;
  info.name = "copy";
  info.vocab = 16;
  info.n = 8;
  info.n_classes = 16;
  return make_model(parse_run_spec(c, false).model, info);
}

}  // namespace cerebra::test
