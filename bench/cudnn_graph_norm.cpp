// cuDNN's graph (backend) API as the baseline of layer norm, RMS norm and instance norm (training
// forward and backward). One operation per graph: NORM_FORWARD in the training phase (y, and the
// statistics saved as normkit saves them) or NORM_BACKWARD (dx, dscale and, except RMS norm,
// dbias, from x, dy, scale and the saved statistics). No cudnn_frontend: the backend descriptors
// are built directly.
//
// Tensors are 4-D, as cuDNN's norm engines expect:
//  - layer / RMS norm: x [M, D, 1, 1] with D contiguous, scale and bias [1, D, 1, 1],
//    statistics [M, 1, 1, 1];
//  - instance norm: x [N, C, H, W] with NCHW or NHWC strides, scale and bias [1, C, 1, 1],
//    statistics [N, C, 1, 1].
// eps is a by-value fp32 scalar. The engine is the first of cuDNN's heuristic list (mode A, then
// the fallback list) whose execution plan finalizes; its global index is named in the note.
// Building a graph or finding an engine can fail for a dtype or layout cuDNN does not support:
// that is reported through Unsupported, never as an error.
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cudnn_common.hpp"
#include "device_memory.hpp"

namespace nkb::cudnn {
namespace {

using Dims = std::array<int64_t, 4>;

// An owned backend descriptor.
class Backend {
 public:
  explicit Backend(cudnnBackendDescriptorType_t type) {
    check_setup(cudnnBackendCreateDescriptor(type, &desc_), "cudnnBackendCreateDescriptor");
  }
  ~Backend() {
    if (desc_ != nullptr) cudnnBackendDestroyDescriptor(desc_);
  }
  Backend(Backend&& other) noexcept : desc_(std::exchange(other.desc_, nullptr)) {}
  Backend& operator=(Backend&&) = delete;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* value, const char* what) {
    check_setup(cudnnBackendSetAttribute(desc_, name, type, count, value), what);
  }
  void set(cudnnBackendAttributeName_t name, const Backend& other, const char* what) {
    const cudnnBackendDescriptor_t d = other.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, what);
  }
  void finalize(const char* what) { check_setup(cudnnBackendFinalize(desc_), what); }

 private:
  cudnnBackendDescriptor_t desc_ = nullptr;
};

enum Uid : int64_t { kX = 1, kY, kMean, kInvVar, kScale, kBias, kEps, kDy, kDx, kDscale, kDbias };

Backend tensor(Uid uid, cudnnDataType_t dtype, const Dims& dims, const Dims& strides,
               bool by_value = false) {
  Backend t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t id = uid, alignment = 16;
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id, "tensor id");
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, "tensor data type");
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dimensions");
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
  if (by_value) {
    const bool yes = true;
    t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor by value");
  }
  t.finalize("tensor finalize");
  return t;
}

// Dimensions and strides of x, of the parameters and of the statistics.
struct Shapes {
  Dims x, x_strides, param, param_strides, stat, stat_strides;
};

Shapes shapes(const Case& c) {
  if (c.is_row_op()) {
    const int64_t m = c.rows, d = c.cols;
    return {{m, d, 1, 1}, {d, 1, d, d}, {1, d, 1, 1}, {d, 1, d, d}, {m, 1, 1, 1}, {1, 1, 1, 1}};
  }
  const int64_t n = c.n, ch = c.c, h = c.h, w = c.w;
  const Dims x_strides =
      c.layout == NK_NCHW ? Dims{ch * h * w, h * w, w, 1} : Dims{h * w * ch, 1, w * ch, ch};
  return {{n, ch, h, w}, x_strides, {1, ch, 1, 1}, {ch, 1, ch, ch}, {n, ch, 1, 1}, {ch, 1, ch, ch}};
}

cudnnBackendNormMode_t norm_mode(Op op) {
  switch (op) {
    case Op::layer_norm:
      return CUDNN_LAYER_NORM;
    case Op::rms_norm:
      return CUDNN_RMS_NORM;
    case Op::instance_norm:
      return CUDNN_INSTANCE_NORM;
    default:
      throw Unsupported(std::string("no graph norm mode for ") + op_name(op));
  }
}

// What an execution keeps alive: the plan, its workspace, the variant pack and what it points to.
struct Graph {
  std::vector<Backend> keep;  // tensors, operation, graph: owned until the plan goes
  std::unique_ptr<Backend> config, plan, pack;
  DeviceMemory workspace;
  alignas(16) float eps = 1e-5f;
  std::vector<int64_t> uids;
  std::vector<void*> pointers;
};

// The engine configurations cuDNN's heuristics propose for `graph` in `mode`.
std::vector<Backend> engine_configs(const Backend& op_graph, cudnnBackendHeurMode_t mode) {
  Backend heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  heur.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, op_graph, "heuristics graph");
  heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
  heur.finalize("heuristics finalize");
  int64_t count = 0;
  check_setup(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                       CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
              "heuristics result count");
  std::vector<Backend> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    raw.push_back(configs.back().get());
  }
  if (count > 0) {
    check_setup(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count, raw.data()),
                "heuristics results");
    while (static_cast<int64_t>(configs.size()) > count) configs.pop_back();
  }
  return configs;
}

// The global index of the engine of an engine configuration, or -1 when cuDNN does not say.
int64_t engine_index(const Backend& config) {
  try {
    Backend engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    cudnnBackendDescriptor_t raw = engine.get();
    int64_t count = 0, index = -1;
    if (cudnnBackendGetAttribute(config.get(), CUDNN_ATTR_ENGINECFG_ENGINE,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count,
                                 &raw) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(engine.get(), CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1,
                                 &count, &index) != CUDNN_STATUS_SUCCESS) {
      return -1;
    }
    return index;
  } catch (const Unsupported&) {
    return -1;
  }
}

// An execution plan and the engine configuration it was made from (kept alive with it).
struct Plan {
  std::unique_ptr<Backend> plan, config;
  int64_t engine = -1;  // the engine's global index, -1 when cuDNN does not say
};

// Finalizes an execution plan with the first engine configuration that accepts the graph.
Plan make_plan(cudnnHandle_t handle, const Backend& op_graph) {
  std::string last_failure = "no engine configuration proposed";
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    std::vector<Backend> configs;
    try {
      configs = engine_configs(op_graph, mode);
    } catch (const Unsupported& e) {
      last_failure = e.what();
      continue;
    }
    for (Backend& config : configs) {
      Plan p;
      p.plan = std::make_unique<Backend>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "plan handle");
      p.plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config, "plan engine configuration");
      const cudnnStatus_t status = cudnnBackendFinalize(p.plan->get());
      if (status == CUDNN_STATUS_SUCCESS) {
        p.engine = engine_index(config);
        p.config = std::make_unique<Backend>(std::move(config));
        return p;
      }
      last_failure = "execution plan finalize: " + status_text(status);
    }
  }
  throw Unsupported(last_failure);
}

}  // namespace

Prepared prepare_graph_norm(cudnnHandle_t handle, const Case& c, CaseBuffers& b) {
  auto g = std::make_shared<Graph>();
  const cudnnBackendNormMode_t mode = norm_mode(c.op);
  const bool rms = c.op == Op::rms_norm;
  const bool backward = c.phase == Phase::backward;
  const Shapes s = shapes(c);
  const cudnnDataType_t x_type = data_type(c.dtype);
  const cudnnDataType_t param_type = data_type(c.is_row_op() ? c.weight_dtype : NK_F32);

  // Tensors, with the buffer each one reads or writes.
  std::vector<std::pair<Uid, void*>> bindings;
  auto add = [&](Uid uid, cudnnDataType_t type, const Dims& dims, const Dims& strides, void* ptr,
                 bool by_value = false) -> const Backend& {
    g->keep.push_back(tensor(uid, type, dims, strides, by_value));
    bindings.emplace_back(uid, ptr);
    return g->keep.back();
  };
  g->keep.reserve(16);  // references into `keep` stay valid while the graph is built
  const Backend& x = add(kX, x_type, s.x, s.x_strides, b.x.get());
  const Backend& scale = add(kScale, param_type, s.param, s.param_strides, b.weight.get());
  const Backend* mean =
      rms ? nullptr : &add(kMean, CUDNN_DATA_FLOAT, s.stat, s.stat_strides, b.save_mean.get());
  const Backend& inv_var =
      add(kInvVar, CUDNN_DATA_FLOAT, s.stat, s.stat_strides, b.save_invstd.get());

  Backend op(backward ? CUDNN_BACKEND_OPERATION_NORM_BACKWARD_DESCRIPTOR
                      : CUDNN_BACKEND_OPERATION_NORM_FORWARD_DESCRIPTOR);
  if (!backward) {
    const cudnnBackendNormFwdPhase_t phase = CUDNN_NORM_FWD_TRAINING;
    const Backend& eps =
        add(kEps, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, &g->eps, /*by_value=*/true);
    const Backend& y = add(kY, x_type, s.x, s.x_strides, b.y.get());
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode, "norm mode");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_PHASE, CUDNN_TYPE_NORM_FWD_PHASE, 1, &phase, "phase");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_XDESC, x, "x");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_SCALE_DESC, scale, "scale");
    if (!rms) {
      const Backend& bias = add(kBias, param_type, s.param, s.param_strides, b.bias.get());
      op.set(CUDNN_ATTR_OPERATION_NORM_FWD_BIAS_DESC, bias, "bias");
      op.set(CUDNN_ATTR_OPERATION_NORM_FWD_MEAN_DESC, *mean, "mean");
    }
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_INV_VARIANCE_DESC, inv_var, "inverse variance");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_EPSILON_DESC, eps, "epsilon");
    op.set(CUDNN_ATTR_OPERATION_NORM_FWD_YDESC, y, "y");
    op.finalize("norm forward finalize");
  } else {
    const Backend& dy = add(kDy, x_type, s.x, s.x_strides, b.dy.get());
    const Backend& dx = add(kDx, x_type, s.x, s.x_strides, b.dx.get());
    const Backend& dscale = add(kDscale, param_type, s.param, s.param_strides, b.dweight.get());
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode, "norm mode");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_XDESC, x, "x");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_DYDESC, dy, "dy");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_SCALE_DESC, scale, "scale");
    if (!rms) op.set(CUDNN_ATTR_OPERATION_NORM_BWD_MEAN_DESC, *mean, "mean");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_INV_VARIANCE_DESC, inv_var, "inverse variance");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_DXDESC, dx, "dx");
    op.set(CUDNN_ATTR_OPERATION_NORM_BWD_DSCALE_DESC, dscale, "dscale");
    if (!rms) {
      const Backend& dbias = add(kDbias, param_type, s.param, s.param_strides, b.dbias.get());
      op.set(CUDNN_ATTR_OPERATION_NORM_BWD_DBIAS_DESC, dbias, "dbias");
    }
    op.finalize("norm backward finalize");
  }

  Backend op_graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  const cudnnBackendDescriptor_t raw_op = op.get();
  op_graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw_op,
               "graph op");
  op_graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
  op_graph.finalize("operation graph finalize");

  Plan plan = make_plan(handle, op_graph);
  g->config = std::move(plan.config);
  g->plan = std::move(plan.plan);
  int64_t workspace_bytes = 0, count = 0;
  check_setup(cudnnBackendGetAttribute(g->plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                       CUDNN_TYPE_INT64, 1, &count, &workspace_bytes),
              "plan workspace size");
  g->workspace = DeviceMemory(static_cast<size_t>(workspace_bytes));
  g->keep.push_back(std::move(op));
  g->keep.push_back(std::move(op_graph));

  for (const auto& binding : bindings) {
    g->uids.push_back(binding.first);
    g->pointers.push_back(binding.second);
  }
  g->pack = std::make_unique<Backend>(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  void* workspace = g->workspace.get();
  g->pack->set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
               static_cast<int64_t>(g->uids.size()), g->uids.data(), "variant pack ids");
  g->pack->set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR,
               static_cast<int64_t>(g->pointers.size()), g->pointers.data(),
               "variant pack pointers");
  g->pack->set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace,
               "variant pack workspace");
  g->pack->finalize("variant pack finalize");

  std::string note = std::string("cuDNN: graph ") +
                     (backward ? "NORM_BACKWARD " : "NORM_FORWARD ") + op_name(c.op);
  if (plan.engine >= 0) note += ", engine " + std::to_string(plan.engine);
  return {[g, handle] { return cudnnBackendExecute(handle, g->plan->get(), g->pack->get()); },
          note};
}

}  // namespace nkb::cudnn
