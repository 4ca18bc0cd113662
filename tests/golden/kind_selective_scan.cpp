// kind = selective_scan: state-spaces/mamba's selective_scan_ref on channel-major tensors. Checks the prefill
// kernel (1 and 2 threads), the decode step token by token, and the final states.
#include <hystack/kernels.hpp>

#include "golden.hpp"

namespace {

using hystack::Matrix;
using hystack::MatrixView;

// [batch, rows, cols] slice b, transposed to [cols, rows] (channel-major -> token-major).
Matrix<float> transposed(const golden::Tensor& t, std::size_t b) {
    const std::size_t R = t.dim(1), C = t.dim(2);
    Matrix<float> m(C, R);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c = 0; c < C; ++c) m(c, r) = t.data[(b * R + r) * C + c];
    return m;
}

std::vector<float> channel_major(const Matrix<float>& m) {  // [L, d] -> [d, L]
    std::vector<float> v(m.size());
    for (std::size_t t = 0; t < m.rows(); ++t)
        for (std::size_t d = 0; d < m.cols(); ++d) v[d * m.rows() + t] = m(t, d);
    return v;
}

void check(const golden::File& f, golden::Report& rep) {
    const auto& u = f.at("u");
    const std::size_t batch = u.dim(0), d = u.dim(1), L = u.dim(2);
    const auto& A = f.at("A");
    const std::size_t N = A.dim(1);
    if (A.dim(0) != d) return rep.fail("A: expected " + std::to_string(d) + " rows");
    MatrixView<const float> Av(A.data.data(), d, N);
    std::span<const float> D = f.at("D").data, bias = f.at("delta_bias").data;
    hystack::ThreadPool pool(2);
    for (std::size_t b = 0; b < batch; ++b) {
        const std::string tag = golden::batch_tag(batch, b);
        auto uu = transposed(u, b), delta = transposed(f.at("delta"), b), z = transposed(f.at("z"), b);
        auto B = transposed(f.at("B"), b), C = transposed(f.at("C"), b);
        std::span<const float> want_out(f.at("out").data.data() + b * d * L, d * L);
        std::span<const float> want_state(f.at("last_state").data.data() + b * d * N, d * N);
        for (int threads : {1, 2}) {
            Matrix<float> out(L, d), h(d, N);
            if (threads == 1) {
                hystack::kernels::selective_scan(uu.view(), delta.view(), bias, Av, B.view(), C.view(), D, z.view(),
                                                 h.view(), out.view());
            } else {
                hystack::kernels::selective_scan(uu.view(), delta.view(), bias, Av, B.view(), C.view(), D, z.view(),
                                                 h.view(), out.view(), pool);
            }
            const std::string s = tag + (threads == 1 ? "" : "@2t");
            rep.compare("out" + s, channel_major(out), want_out);
            rep.compare("last_state" + s, h.span(), want_state);
        }
        // Decode step, one token at a time from a zero state.
        Matrix<float> out(L, d), h(d, N);
        for (std::size_t t = 0; t < L; ++t)
            hystack::kernels::selective_scan_step(uu.view().row_span(t), delta.view().row_span(t), bias, Av,
                                                  B.view().row_span(t), C.view().row_span(t), D, z.view().row_span(t),
                                                  h.view(), out.view().row_span(t));
        rep.compare("step out" + tag, channel_major(out), want_out);
        rep.compare("step last_state" + tag, h.span(), want_state);
    }
}

golden::Register reg("selective_scan", check);

}  // namespace
