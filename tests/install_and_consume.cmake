# Installs the build tree into a fresh prefix, then (1) configures, builds and runs the consumer
# project with find_package(normkit CONFIG REQUIRED), and (2) compiles and runs a C program with
# the flags pkg-config gives for normkit. Run by ctest as `cmake -P` with BUILD_DIR, CONSUMER_DIR,
# WORK_DIR, GENERATOR and C_COMPILER set.
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/consumer -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer)
run(${WORK_DIR}/consumer/normkit_consumer)

file(GLOB_RECURSE pc_files ${prefix}/*/normkit.pc)
list(LENGTH pc_files found)
if(NOT found EQUAL 1)
  message(FATAL_ERROR "expected one installed normkit.pc, found: ${pc_files}")
endif()
get_filename_component(pc_dir ${pc_files} DIRECTORY)
execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir} pkg-config --cflags --libs normkit
                OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config --cflags --libs normkit failed")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
string(REGEX MATCH "-L([^;]+)" _ "${flags}")
set(libdir ${CMAKE_MATCH_1})
run(${C_COMPILER} -std=c99 ${CONSUMER_DIR}/consumer.c ${flags} -lm -Wl,-rpath,${libdir}
    -o ${WORK_DIR}/normkit_c_consumer)
run(${WORK_DIR}/normkit_c_consumer)
