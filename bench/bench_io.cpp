// Checkpoint loading: open a safetensors file and read every tensor into preallocated float
// storage (what load_params does), for a 1 GB F32 file and a BF16 file of the same parameter
// count. Bytes processed = file bytes read. The files are created once in the temp directory and
// stay in the page cache, so the reference is BM_read_page_cache: plain read(2) of the same file
// into the same buffer (the page-cache copy limit), next to BM_stream_read (DRAM bandwidth).
#include "bench_common.hpp"

#include <hystack/io.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace hystack;

namespace {

constexpr std::size_t tensor_floats = std::size_t(4) << 20;  // 16 MB of F32 per tensor
constexpr std::size_t num_tensors = 64;                      // 1 GiB of F32 in all

// Creates (once per process) a file of num_tensors tensors of `dtype`; returns its path.
const std::string& bench_file(const std::string& dtype) {
    static std::map<std::string, std::string> paths;
    auto it = paths.find(dtype);
    if (it != paths.end()) return it->second;
    const auto path = (std::filesystem::temp_directory_path() / ("hystack_bench_io_" + dtype + ".safetensors")).string();
    std::vector<float> src(tensor_floats);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = float(int(i % 2001) - 1000) * 1e-3f;
    std::vector<io::TensorData> tensors;
    for (std::size_t t = 0; t < num_tensors; ++t)
        tensors.push_back({"model.layers." + std::to_string(t) + ".weight", {tensor_floats / 1024, 1024}, src, dtype});
    bool reuse = false;
    try {  // an earlier run's file of the right layout is reused
        io::SafetensorsFile f(path);
        reuse = f.tensors().size() == num_tensors && f.tensors()[0].dtype == dtype;
    } catch (const hystack::error&) {
    }
    if (!reuse) io::write_safetensors(path, tensors);
    return paths[dtype] = path;
}

// Destination storage, allocated and touched once (a model's weights exist before loading).
std::vector<float>& dest() {
    static std::vector<float> d(tensor_floats * num_tensors, 0.0f);
    return d;
}

void load(benchmark::State& state, const std::string& dtype) {
    const auto& path = bench_file(dtype);
    auto& out = dest();
    std::size_t bytes = 0;
    for (auto _ : state) {
        io::SafetensorsFile f(path);
        bytes = 0;
        std::size_t off = 0;
        for (const auto& t : f.tensors()) {
            f.read_into(t, std::span<float>(out.data() + off, t.numel()));
            off += t.numel();
            bytes += t.nbytes();
        }
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(tensor_floats * num_tensors));
}

}  // namespace

static void BM_load_f32(benchmark::State& state) { load(state, "F32"); }
BENCHMARK(BM_load_f32)->UseRealTime()->Unit(benchmark::kMillisecond);

static void BM_load_bf16(benchmark::State& state) { load(state, "BF16"); }
BENCHMARK(BM_load_bf16)->UseRealTime()->Unit(benchmark::kMillisecond);

// The page-cache limit: read(2) of the whole F32 file into the same (already touched) buffer.
// A BF16 checkpoint's matrices loaded as `type` (0 f32, 1 bf16, 2 q8_0) through load_params: the
// conversion while loading (widen, copy, or ggml's quantiser), one thread. Bytes = source (file) bytes.
static void BM_load_convert(benchmark::State& state) {
    const DType type = DType(std::uint8_t(state.range(0)));
    state.SetLabel(std::string("bf16 -> ") + to_string(type));
    const auto ckpt = io::Checkpoint::open(bench_file("BF16"));
    const std::size_t rows = tensor_floats / 1024;
    std::vector<Weight> weights(num_tensors);
    for (auto& w : weights) w = Weight(rows, 1024, type);  // the model exists before loading
    ParamList params;
    for (std::size_t t = 0; t < num_tensors; ++t)
        params.push_back(weights[t].param("model.layers." + std::to_string(t) + ".weight", {rows, 1024}));
    io::LoadOptions opt;
    opt.weights = type;
    for (auto _ : state) io::load_params(ckpt, params, opt);
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(num_tensors * tensor_floats * 2));
}
BENCHMARK(BM_load_convert)->ArgName("type")->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

static void BM_read_page_cache(benchmark::State& state) {
    const auto& path = bench_file("F32");
    auto& out = dest();
    const auto size = std::filesystem::file_size(path);
    std::size_t bytes = 0;
    for (auto _ : state) {
        std::FILE* fp = std::fopen(path.c_str(), "rb");
        if (!fp) {
            state.SkipWithError("cannot open the benchmark file");
            return;
        }
        std::setvbuf(fp, nullptr, _IONBF, 0);  // straight read(2) calls into our buffer
        bytes = std::fread(out.data(), 1, std::min<std::size_t>(size, out.size() * sizeof(float)), fp);
        std::fclose(fp);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}
BENCHMARK(BM_read_page_cache)->UseRealTime()->Unit(benchmark::kMillisecond);
