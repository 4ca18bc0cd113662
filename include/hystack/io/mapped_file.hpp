#pragma once
#include "../core/module.hpp"

// detail::Storage: the read-only bytes of a file (or of an in-memory buffer). Files are
// memory-mapped where POSIX mmap exists, so a header is parsed from the mapping and in-place views
// cost nothing; read_at copies with pread(2) instead: a page-cache copy runs 3-5x faster than
// faulting the mapping in 4 KB pages, and a file truncated while open reads short (an error) rather
// than faulting. Views of a mapped file that another process truncates can still fault (SIGBUS): that
// is the price of mapping. Without mmap the whole file is read into memory.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#define HYSTACK_IO_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "../core/error.hpp"

namespace hystack::io {

namespace detail {

// A read-only byte range backed by a mapping or an owned buffer.
class Storage {
public:
    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
#if HYSTACK_IO_MMAP
        if (map_) ::munmap(map_, size_);
        if (fd_ >= 0) ::close(fd_);
#endif
    }

    static std::unique_ptr<Storage> from_buffer(std::vector<std::byte> bytes) {
        auto s = std::make_unique<Storage>();
        s->owned_ = std::move(bytes);
        s->data_ = s->owned_.data();
        s->size_ = s->owned_.size();
        return s;
    }

    static std::unique_ptr<Storage> open(const std::string& path) {
        std::error_code ec;
        const auto st = std::filesystem::status(path, ec);
        check(!ec && std::filesystem::exists(st), path, ": cannot open file (no such file)");
        check(!std::filesystem::is_directory(st), path, ": cannot open file (is a directory)");
        // checked before open(2): opening a FIFO for reading would block until a writer appears
        check(std::filesystem::is_regular_file(st), path, ": not a regular file");
#if HYSTACK_IO_MMAP
        auto s = std::make_unique<Storage>();
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        check(fd >= 0, path, ": cannot open file (", std::strerror(errno), ")");
        struct stat sb {};
        if (::fstat(fd, &sb) != 0) {
            const int e = errno;
            ::close(fd);
            fail(path, ": cannot stat file (", std::strerror(e), ")");
        }
        if (!S_ISREG(sb.st_mode)) {
            ::close(fd);
            fail(path, ": not a regular file");
        }
        s->size_ = std::size_t(sb.st_size);
        if (s->size_ > 0) {
            void* p = ::mmap(nullptr, s->size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                fail(path, ": cannot map file (", std::strerror(e), ")");
            }
            s->map_ = p;
            s->data_ = static_cast<const std::byte*>(p);
        }
        s->fd_ = fd;  // kept for read_at
        s->path_ = path;
        return s;
#else
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        check(bool(in), path, ": cannot open file");
        const auto n = in.tellg();
        check(n >= 0, path, ": cannot determine the file size");
        std::vector<std::byte> bytes(static_cast<std::size_t>(n));
        in.seekg(0);
        in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
        check(bool(in), path, ": read error");
        return from_buffer(std::move(bytes));
#endif
    }

    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }

    /// Copies bytes [off, off + n) into dst. With a file descriptor this is pread(2): a copy from the
    /// page cache without faulting the mapping in page by page (about twice as fast for whole
    /// tensors), and a file truncated behind our back reads short (an error) instead of SIGBUS.
    void read_at(std::uint64_t off, void* dst, std::size_t n) const {
#if HYSTACK_IO_MMAP
        if (fd_ >= 0) {
            auto* out = static_cast<char*>(dst);
            while (n > 0) {
                const std::size_t chunk = std::min<std::size_t>(n, std::size_t(1) << 30);
                const ssize_t r = ::pread(fd_, out, chunk, off_t(off));
                if (r < 0 && errno == EINTR) continue;
                check(r > 0, path_, ": read error at byte ", off, " (", r < 0 ? std::strerror(errno) : "file shrank", ")");
                out += r;
                off += std::uint64_t(r);
                n -= std::size_t(r);
            }
            return;
        }
#endif
        if (n) std::memcpy(dst, data_ + off, n);
    }

private:
    void* map_ = nullptr;
    int fd_ = -1;
    std::string path_;
    std::vector<std::byte> owned_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace detail

}  // namespace hystack::io
