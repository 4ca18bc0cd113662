# cmake -DINCLUDE_DIR=<dir holding core/, kernels/, ...> -P check_includes.cmake
#
# Fails when an internal header includes a directory above its own. hystack's include graph runs
# one way:
#   core <- kernels <- layers <- stack <- model <- loaders
#   core <- io <- loaders
# so a header may include its own directory, core/, and the directories below it in that order; io/
# (file formats and config parsing) includes only core/ and io/, and only loaders/ sees both the model
# and io/. Module headers beside the directories (kernels.hpp, ...) are checked as part of their
# directory; io.hpp, the checkpoint umbrella, as part of loaders/, and hystack.hpp may include all.
# Includes are read from every `#include "..."` (resolved against the including file) and every
# `#include <hystack/...>`; other <...> includes are third-party and ignored. A directory not listed
# below is an error, so a new one has to be placed in the order.
cmake_minimum_required(VERSION 3.21)
if(NOT INCLUDE_DIR OR NOT IS_DIRECTORY "${INCLUDE_DIR}")
  message(FATAL_ERROR "check_includes: pass -DINCLUDE_DIR=<include/hystack>")
endif()
get_filename_component(root "${INCLUDE_DIR}" ABSOLUTE)

# may_include_<dir>: the directories a header of <dir> may include.
set(may_include_core    core)
set(may_include_kernels core kernels)
set(may_include_layers  core kernels layers)
set(may_include_stack   core kernels layers stack)
set(may_include_model   core kernels layers stack model)
set(may_include_io      core io)
set(may_include_loaders core kernels layers stack model io loaders)
set(may_include_hystack core kernels layers stack model io loaders)

# The directory a file (path relative to root) belongs to: its first component, or for a module
# header beside the directories its name (io.hpp counts as loaders/: it includes the loaders).
function(owner_of rel out)
  if(rel MATCHES "^([^/]+)/")
    set(d "${CMAKE_MATCH_1}")
  else()
    string(REGEX REPLACE "\\.[^.]*$" "" d "${rel}")
    if(d STREQUAL "io")
      set(d loaders)
    endif()
  endif()
  set(${out} "${d}" PARENT_SCOPE)
endfunction()

set(problems "")
set(nproblems 0)
file(GLOB entries RELATIVE "${root}" "${root}/*")
foreach(e IN LISTS entries)
  if(IS_DIRECTORY "${root}/${e}" AND NOT DEFINED may_include_${e})
    list(APPEND problems "${e}/: a directory this check does not know (place it in the order in check_includes.cmake)")
    math(EXPR nproblems "${nproblems} + 1")
  endif()
endforeach()

file(GLOB_RECURSE headers RELATIVE "${root}" "${root}/*.hpp" "${root}/*.h")
list(SORT headers)
set(nincludes 0)
foreach(h IN LISTS headers)
  owner_of("${h}" from)
  if(NOT DEFINED may_include_${from})
    continue()  # reported above as an unknown directory
  endif()
  get_filename_component(hdir "${root}/${h}" DIRECTORY)
  file(STRINGS "${root}/${h}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
  foreach(line IN LISTS lines)
    if(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
      get_filename_component(target "${hdir}/${CMAKE_MATCH_1}" ABSOLUTE)
      file(RELATIVE_PATH rel "${root}" "${target}")
      set(shown "\"${CMAKE_MATCH_1}\"")
    elseif(line MATCHES "#[ \t]*include[ \t]*<hystack/([^>]+)>")
      set(rel "${CMAKE_MATCH_1}")
      set(shown "<hystack/${CMAKE_MATCH_1}>")
    else()
      continue()  # a third-party or standard header
    endif()
    math(EXPR nincludes "${nincludes} + 1")
    if(rel MATCHES "^\\.\\./")
      list(APPEND problems "${h}: includes ${shown}, outside include/hystack")
      math(EXPR nproblems "${nproblems} + 1")
      continue()
    endif()
    owner_of("${rel}" to)
    if(NOT to IN_LIST may_include_${from})
      string(REPLACE ";" ", " allowed "${may_include_${from}}")
      list(APPEND problems "${h}: includes ${shown} (${to}/), but ${from}/ may include only ${allowed}")
      math(EXPR nproblems "${nproblems} + 1")
    endif()
  endforeach()
endforeach()

list(LENGTH headers nheaders)
if(nproblems GREATER 0)
  foreach(p IN LISTS problems)
    message(NOTICE "  ${p}")
  endforeach()
  message(FATAL_ERROR "check_includes: ${nproblems} problem(s) with the layering "
                      "(core <- kernels <- layers <- stack <- model <- loaders, core <- io <- loaders)")
endif()
message(STATUS "check_includes: ${nheaders} headers, ${nincludes} hystack includes, layering holds")
