// kind = attention: explicit masked softmax in float64 (torch). The first `past` keys/values go through
// a cache (a WindowKVCache ring when the window is smaller than past + L, so the ring is exercised; a
// KVCache otherwise), then the L new queries run (1) as one prefill (keys: cache + the L new ones), on
// 1 and 2 threads, and (2) token by token through the decode path, appending each key as it comes.
#include <hystack/kernels.hpp>

#include "golden.hpp"

namespace {

using hystack::Matrix;
using hystack::MatrixView;

void check(const golden::File& f, golden::Report& rep) {
    const std::size_t L = f.meta_int("seqlen"), past = f.meta_int("past");
    const std::size_t H = f.meta_int("n_heads"), Hk = f.meta_int("n_kv_heads"), d = f.meta_int("head_dim");
    const std::size_t W = f.meta_int("window");
    const hystack::kernels::AttentionDims dims{H, Hk, d, W, float(f.meta_double("scale"))};
    const auto& q = f.at("q");
    const auto& k = f.at("k");
    const auto& v = f.at("v");
    const auto& want = f.at("out");
    const std::size_t n = past + L;
    if (q.numel() != L * H * d || k.numel() != n * Hk * d || v.numel() != n * Hk * d || want.numel() != L * H * d)
        return rep.fail("tensor sizes do not match the metadata");
    MatrixView<const float> qv(q.data.data(), L, H * d), kv(k.data.data(), n, Hk * d), vv(v.data.data(), n, Hk * d);

    const bool ring = W != 0 && n > W;
    auto make_cache = [&] {
        return ring ? hystack::AttentionCache(hystack::WindowKVCache(W, Hk, d)) : hystack::AttentionCache(hystack::KVCache(n, Hk, d));
    };
    hystack::ThreadPool pool(2);
    hystack::SerialExecutor serial;

    // (1) prefill of the L queries over cache + new keys.
    for (int threads : {1, 2}) {
        auto cache = make_cache();
        cache.append(kv.rows_slice(0, past), vv.rows_slice(0, past));
        hystack::kernels::KVView view = cache.view();
        view.add({past, L, kv.row(past), vv.row(past), Hk * d});
        Matrix<float> out(L, H * d);
        hystack::kernels::AttentionWorkspace ws;
        if (threads == 1)
            hystack::kernels::attention(qv, past, view, out.view(), dims, ws, serial);
        else
            hystack::kernels::attention(qv, past, view, out.view(), dims, ws, pool);
        rep.compare(std::string("out (prefill, ") + std::to_string(threads) + " thread" + (threads > 1 ? "s" : "") + ")", out.span(),
                    want.data);
    }
    // (2) token by token through the decode path.
    {
        auto cache = make_cache();
        cache.append(kv.rows_slice(0, past), vv.rows_slice(0, past));
        Matrix<float> out(L, H * d);
        hystack::kernels::AttentionWorkspace ws;
        for (std::size_t i = 0; i < L; ++i) {
            cache.append(kv.rows_slice(past + i, 1), vv.rows_slice(past + i, 1));
            const std::size_t pos[1] = {past + i};
            const hystack::kernels::KVView views[1] = {cache.view()};
            hystack::kernels::attention_decode(qv.rows_slice(i, 1), pos, views, out.view().rows_slice(i, 1), dims, ws, serial);
        }
        rep.compare("out (decode steps)", out.span(), want.data);
    }
    if (ring) rep.notes.push_back("ring cache of " + std::to_string(W) + " slots");
}

golden::Register reg("attention", check);

}  // namespace
