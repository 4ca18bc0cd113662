#pragma once
#include "../core/module.hpp"

// Small JSON files read strictly (checkpoint indexes, model configs): detail::read_text_file reads a
// file whole, refusing anything over a size limit, and detail::parse_json_unique parses JSON text
// into a DOM, rejecting duplicate object keys at any depth (a DOM would keep only the last).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"

namespace hystack::io {

namespace detail {

// Parses JSON text into a DOM, rejecting duplicate object keys at any depth (the DOM keeps only the last).
inline nlohmann::json parse_json_unique(std::string_view text, const std::string& what) {
    std::vector<std::unordered_set<std::string>> keys;
    std::string dup;
    auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
        using E = nlohmann::json::parse_event_t;
        if (ev == E::object_start) keys.emplace_back();
        else if (ev == E::object_end) {
            if (!keys.empty()) keys.pop_back();
        } else if (ev == E::key && !keys.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!keys.back().insert(k).second && dup.empty()) dup = k;
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), cb);
    } catch (const nlohmann::json::exception& e) {
        fail(what, ": invalid JSON: ", e.what());
    }
    check(dup.empty(), what, ": duplicate key '", dup, "'");
    return j;
}

// Reads a small text file (JSON configs), refusing anything over `limit` bytes.
inline std::string read_text_file(const std::string& path, std::uint64_t limit = 64u << 20) {
    std::error_code ec;
    check(std::filesystem::is_regular_file(path, ec), path, ": cannot open file (no such file)");
    const auto size = std::filesystem::file_size(path, ec);
    check(!ec, path, ": cannot determine the file size");
    check(size <= limit, path, ": file of ", size, " bytes exceeds the limit of ", limit, " bytes");
    std::ifstream in(path, std::ios::binary);
    check(bool(in), path, ": cannot open file");
    std::string s(std::size_t(size), '\0');
    in.read(s.data(), std::streamsize(s.size()));
    check(in.gcount() == std::streamsize(s.size()), path, ": read error");
    return s;
}

}  // namespace detail

}  // namespace hystack::io
