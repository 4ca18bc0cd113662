// hystack_golden DIR...: checks every golden file of a known kind under the given directories,
// prints one line per file and a closing "N passed, M failed", exits non-zero on any failure and when
// an argument (directory or file) holds no case it can run: a wrong path or an emptied data folder
// must not pass as "0 passed, 0 failed".
#include "golden.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>

namespace golden {

std::map<std::string, Checker>& registry() {
    static std::map<std::string, Checker> r;
    return r;
}

const Tensor& File::at(const std::string& name) const {
    auto it = tensors.find(name);
    hystack::check(it != tensors.end(), path.string(), ": missing tensor '", name, "'");
    return it->second;
}
std::size_t File::meta_int(const std::string& key) const {
    auto it = meta.find(key);
    hystack::check(it != meta.end(), path.string(), ": missing metadata '", key, "'");
    return std::size_t(std::stoll(it->second));
}
double File::meta_double(const std::string& key) const {
    auto it = meta.find(key);
    hystack::check(it != meta.end(), path.string(), ": missing metadata '", key, "'");
    return std::stod(it->second);
}

void Report::compare(const std::string& what, std::span<const float> got, std::span<const float> want, double atol,
                     double rtol) {
    if (got.size() != want.size()) {
        fail(what + ": size " + std::to_string(got.size()) + ", expected " + std::to_string(want.size()));
        return;
    }
    double worst = 0, worst_excess = 0;
    std::size_t bad = 0, first_bad = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double g = got[i], w = want[i];
        const double err = std::fabs(g - w);
        const double lim = atol + rtol * std::fabs(w);
        if (!(err <= lim)) {  // NaN fails
            if (bad++ == 0) first_bad = i;
            worst_excess = std::max(worst_excess, std::isnan(err) ? INFINITY : err / lim);
        }
        if (!std::isnan(err)) worst = std::max(worst, err);
    }
    std::ostringstream os;
    if (bad) {
        os << what << ": " << bad << " of " << got.size() << " elements out of tolerance (first at " << first_bad
           << ": got " << got[first_bad] << ", want " << want[first_bad] << "; max abs err " << worst << ")";
        fail(os.str());
    } else {
        os << what << " " << worst;
        notes.push_back(os.str());
    }
}

File load(const std::filesystem::path& path) {
    // Golden files are read with hystack's own safetensors reader when the io module provides it;
    // that reader is itself tested against files the tests write by hand.
    File f;
    f.path = path;
    hystack::io::SafetensorsFile st(path.string());
    for (const auto& [k, v] : st.metadata()) f.meta[k] = v;
    for (const auto& info : st.tensors()) {
        Tensor t;
        t.shape = info.shape;
        t.data = st.read_float(info.name);
        f.tensors.emplace(info.name, std::move(t));
    }
    return f;
}

}  // namespace golden

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    if (argc < 2) {
        std::fprintf(stderr, "usage: hystack_golden DIR [DIR...]\n");
        return 2;
    }
    // (file, index of the argument it came from)
    std::vector<std::pair<fs::path, int>> files;
    for (int a = 1; a < argc; ++a) {
        fs::path p(argv[a]);
        if (fs::is_regular_file(p)) {
            files.emplace_back(p, a);
        } else if (fs::is_directory(p)) {
            for (auto& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file() && e.path().extension() == ".safetensors") files.emplace_back(e.path(), a);
        } else {
            std::fprintf(stderr, "hystack_golden: %s: no such file or directory\n", argv[a]);
            return 2;
        }
    }
    std::sort(files.begin(), files.end());
    int passed = 0, failed = 0;
    std::vector<int> cases(std::size_t(argc), 0);  // cases run (passed or failed) per argument
    for (const auto& [path, arg] : files) {
        std::string kind;
        try {
            hystack::io::SafetensorsFile st(path.string());
            auto it = st.metadata().find("kind");
            if (it == st.metadata().end()) continue;  // e.g. a model.safetensors checkpoint beside a golden file
            kind = it->second;
        } catch (const std::exception& e) {
            std::printf("FAIL %s: %s\n", path.string().c_str(), e.what());
            ++failed;
            ++cases[std::size_t(arg)];
            continue;
        }
        auto checker = golden::registry().find(kind);
        if (checker == golden::registry().end()) {
            std::printf("note: skipping %s: unknown kind '%s'\n", path.string().c_str(), kind.c_str());
            continue;
        }
        ++cases[std::size_t(arg)];
        golden::Report report;
        try {
            checker->second(golden::load(path), report);
        } catch (const std::exception& e) {
            report.fail(std::string("error: ") + e.what());
        }
        if (report.failures.empty()) {
            std::string notes;
            for (auto& n : report.notes) notes += (notes.empty() ? "" : ", ") + n;
            std::printf("PASS %s [%s] max abs err: %s\n", path.string().c_str(), kind.c_str(), notes.c_str());
            ++passed;
        } else {
            std::printf("FAIL %s [%s]\n", path.string().c_str(), kind.c_str());
            for (auto& f : report.failures) std::printf("     %s\n", f.c_str());
            ++failed;
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    bool empty = false;
    for (int a = 1; a < argc; ++a) {
        if (cases[std::size_t(a)] == 0) {
            std::printf("FAIL %s: no golden case of a known kind\n", argv[a]);
            empty = true;
        }
    }
    return failed || empty ? 1 : 0;
}
