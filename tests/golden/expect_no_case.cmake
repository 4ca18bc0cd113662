# cmake -DGOLDEN=<hystack_golden> -DDATA=<tests/data/golden> -DWORK=<scratch dir> -P expect_no_case.cmake
# hystack_golden must fail (exit 1, naming the argument) for an argument that holds no case it can run:
# an empty directory, one holding only a checkpoint (no "kind" metadata), and an empty one given beside
# real cases, which pass on their own.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/empty ${WORK}/checkpoint_only)
file(COPY ${DATA}/jamba/shared_tiny/model.safetensors DESTINATION ${WORK}/checkpoint_only)

function(expect want)
  execute_process(COMMAND ${GOLDEN} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  list(JOIN ARGN " " args)
  if(NOT rc STREQUAL want)
    message(FATAL_ERROR "hystack_golden ${args}: exit ${rc}, expected ${want}\n${out}${err}")
  endif()
  if(want STREQUAL "1" AND NOT out MATCHES "no golden case of a known kind")
    message(FATAL_ERROR "hystack_golden ${args}: exit 1 without naming the empty argument\n${out}${err}")
  endif()
  message(STATUS "hystack_golden ${args}: exit ${rc} as expected")
endfunction()

expect(1 ${WORK}/empty)
expect(1 ${WORK}/checkpoint_only)
expect(0 ${DATA}/mamba/selective_scan_tiny.safetensors)
expect(1 ${DATA}/mamba/selective_scan_tiny.safetensors ${WORK}/empty)
