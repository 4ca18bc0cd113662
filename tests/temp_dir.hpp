#pragma once
// A fresh directory under the system temp dir for one test, removed at scope exit.
#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>

#include <unistd.h>

struct TempDir {
    std::filesystem::path path;
    explicit TempDir(const std::string& tag = "test") {
        static std::atomic<int> counter{0};
        path = std::filesystem::temp_directory_path() /
               ("hystack_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(path);
        std::filesystem::create_directories(path);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};
