#pragma once
#include "../core/module.hpp"

// Checkpoint: a checkpoint directory (one model.safetensors, or the shards listed by
// model.safetensors.index.json) or a single .safetensors file, as one table of tensors. Shards must
// agree with the index both ways, and an index can name only files beside it.

#include <cstddef>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "json_file.hpp"
#include "safetensors_format.hpp"
#include "safetensors_reader.hpp"

namespace hystack::io {

/// A checkpoint directory: `model.safetensors`, or the shards named by `model.safetensors.index.json`
/// ({"metadata": {...}, "weight_map": {tensor: shard file}}). Every tensor must sit in the shard the
/// index names, and every tensor of a shard must be listed.
class Checkpoint {
public:
    /// Opens `path`: a directory as above, or a single .safetensors file.
    static Checkpoint open(const std::string& path) {
        namespace fs = std::filesystem;
        Checkpoint c;
        c.path_ = path;
        std::error_code ec;
        if (fs::is_regular_file(path, ec)) {
            c.add_single(path);
            return c;
        }
        check(fs::is_directory(path, ec), path, ": no such checkpoint file or directory");
        const fs::path dir(path);
        const fs::path index = dir / "model.safetensors.index.json";
        if (fs::exists(index, ec)) {
            c.open_index(dir, index.string());
            return c;
        }
        const fs::path single = dir / "model.safetensors";
        check(fs::exists(single, ec), path, ": neither model.safetensors nor model.safetensors.index.json found");
        c.add_single(single.string());
        return c;
    }

    const std::string& path() const { return path_; }
    /// Tensor names (file order, shard by shard).
    const std::vector<std::string>& names() const { return names_; }
    bool contains(const std::string& name) const { return where_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
    /// The shard holding `name`.
    const SafetensorsFile& file_of(const std::string& name) const {
        auto it = where_.find(name);
        if (it == where_.end()) fail(path_, ": no tensor named '", name, "'");
        return files_[it->second];
    }
    const std::vector<SafetensorsFile>& files() const { return files_; }
    /// Index metadata (sharded) or the file's __metadata__ (single file).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    void read_into(const std::string& name, std::span<float> dst) const { file_of(name).read_into(name, dst); }
    std::vector<float> read_float(const std::string& name) const { return file_of(name).read_float(name); }

private:
    void add_single(const std::string& file) {
        files_.emplace_back(file);
        metadata_ = files_.back().metadata();
        for (const auto& t : files_.back().tensors()) {
            names_.push_back(t.name);
            where_.emplace(t.name, 0);
        }
    }
    void open_index(const std::filesystem::path& dir, const std::string& index_path) {
        const auto j = detail::parse_json_unique(detail::read_text_file(index_path), index_path);
        check(j.is_object(), index_path, ": not a JSON object");
        check(j.contains("weight_map") && j["weight_map"].is_object(), index_path, ": missing object 'weight_map'");
        if (j.contains("metadata") && j["metadata"].is_object())
            for (const auto& [k, v] : j["metadata"].items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
        std::map<std::string, std::size_t> shard_ids;
        std::unordered_map<std::string, std::string> want;  // tensor -> shard file
        for (const auto& [name, file] : j["weight_map"].items()) {
            check(file.is_string(), index_path, ": weight_map['", name, "'] is not a string");
            const auto& f = file.get_ref<const std::string&>();
            // Shards live beside the index: a plain file name, never a path out of the directory.
            check(!f.empty() && f.find('/') == std::string::npos && f.find('\\') == std::string::npos && f != "." &&
                      f != "..",
                  index_path, ": weight_map['", name, "']: shard '", f, "' is not a file name in the checkpoint directory");
            want.emplace(name, f);
            shard_ids.emplace(f, 0);
        }
        for (auto& [f, id] : shard_ids) {
            id = files_.size();
            files_.emplace_back((dir / f).string());
        }
        for (const auto& file : files_)
            for (const auto& t : file.tensors()) {
                auto it = want.find(t.name);
                check(it != want.end(), index_path, ": tensor '", t.name, "' of ", file.path(),
                      " is not listed in weight_map");
                check((dir / it->second).string() == file.path(), index_path, ": tensor '", t.name, "' is in ",
                      file.path(), " but weight_map names ", it->second);
                names_.push_back(t.name);
                where_.emplace(t.name, std::size_t(&file - files_.data()));
            }
        for (const auto& [name, f] : want)
            check(where_.count(name) != 0, index_path, ": tensor '", name, "' listed in weight_map is missing from ",
                  (dir / f).string());
    }

    std::string path_;
    std::vector<SafetensorsFile> files_;
    std::vector<std::string> names_;
    std::unordered_map<std::string, std::size_t> where_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace hystack::io
