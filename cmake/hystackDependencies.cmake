# Installed packages first (find_package), fetched sources otherwise. Written out by hand so it
# works before CMake 3.24's FIND_PACKAGE_ARGS. .ci/fetched-deps builds and tests the fetched path
# offline with these exact releases (FETCHCONTENT_SOURCE_DIR_HYSTACK_<NAME>).
include(FetchContent)
find_package(Threads REQUIRED)
if(POLICY CMP0135)
  cmake_policy(SET CMP0135 NEW)  # URL downloads: extracted files get the extraction time (and no dev warning)
endif()

# A fetched dependency's headers are not hystack's to fix: mark its targets' include directories
# SYSTEM, as those of an installed package are, so no warning from them reaches a build.
function(hystack_system_includes)
  foreach(target ${ARGN})
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(dirs)
      set_property(TARGET ${target} APPEND PROPERTY INTERFACE_SYSTEM_INCLUDE_DIRECTORIES ${dirs})
    endif()
  endforeach()
endfunction()

# Eigen 3.4: fetch sources only (a subproject would add hundreds of Eigen's test targets).
find_package(Eigen3 3.4 QUIET NO_MODULE)
if(NOT TARGET Eigen3::Eigen)
  message(STATUS "hystack: Eigen3 not found, fetching 3.4.0")
  FetchContent_Declare(hystack_eigen
    URL https://gitlab.com/libeigen/eigen/-/archive/3.4.0/eigen-3.4.0.tar.gz
    SOURCE_SUBDIR does-not-exist)
  FetchContent_MakeAvailable(hystack_eigen)
  add_library(hystack_eigen_headers INTERFACE)
  target_include_directories(hystack_eigen_headers SYSTEM INTERFACE
    $<BUILD_INTERFACE:${hystack_eigen_SOURCE_DIR}>)
  add_library(Eigen3::Eigen ALIAS hystack_eigen_headers)
endif()

# xsimd: Debian's 8.1 target links `xtl` without finding it (xsimd issue 869), so look for xtl first.
find_package(xtl QUIET)
find_package(xsimd QUIET)
if(NOT TARGET xsimd)
  message(STATUS "hystack: xsimd not found, fetching 14.3.0")
  FetchContent_Declare(hystack_xsimd
    URL https://github.com/xtensor-stack/xsimd/archive/refs/tags/14.3.0.tar.gz)
  FetchContent_MakeAvailable(hystack_xsimd)
  hystack_system_includes(xsimd)
endif()

# nlohmann_json: for hystack::io only.
find_package(nlohmann_json 3 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  message(STATUS "hystack: nlohmann_json not found, fetching 3.11.3")
  set(JSON_BuildTests OFF CACHE INTERNAL "")
  set(JSON_Install ON CACHE INTERNAL "")
  FetchContent_Declare(hystack_json
    URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz)
  FetchContent_MakeAvailable(hystack_json)
endif()

if(HYSTACK_BUILD_TESTS)
  find_package(Catch2 QUIET)
  if(NOT TARGET Catch2::Catch2WithMain)
    message(STATUS "hystack: Catch2 not found, fetching 3.7.1")
    FetchContent_Declare(hystack_catch2
      URL https://github.com/catchorg/Catch2/archive/refs/tags/v3.7.1.tar.gz)
    FetchContent_MakeAvailable(hystack_catch2)
    hystack_system_includes(Catch2 Catch2WithMain)
  endif()
endif()

if(HYSTACK_BUILD_BENCH)
  find_package(benchmark QUIET)
  if(NOT TARGET benchmark::benchmark_main)
    message(STATUS "hystack: Google Benchmark not found, fetching 1.9.5")
    set(BENCHMARK_ENABLE_TESTING OFF CACHE INTERNAL "")
    set(BENCHMARK_ENABLE_GTEST_TESTS OFF CACHE INTERNAL "")
    FetchContent_Declare(hystack_benchmark
      URL https://github.com/google/benchmark/archive/refs/tags/v1.9.5.tar.gz)
    FetchContent_MakeAvailable(hystack_benchmark)
    hystack_system_includes(benchmark benchmark_main)
  endif()
endif()
