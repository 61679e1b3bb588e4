# ctest bench_without_gpu (label cpu): with CUDA_VISIBLE_DEVICES set to an empty string, CUDA
# sees no device. normkit_bench must then print one line saying so on stderr, run nothing and
# exit with status 0; with --benchmark_list_tests it must still list every name of every set,
# and every bn_in_place case's out-of-place twin in bn_resnet50.
# With PYTHON and TORCH_COMPARE, the check, long_rows, fused_rows, fused_channels, bn_features and
# bn_mobilenet_v2 sets' names must equal torch_compare.py's.
#   cmake -DBENCH=<path to normkit_bench> [-DPYTHON=<python3> -DTORCH_COMPARE=<torch_compare.py>]
#         -P check_without_gpu.cmake

function(run_bench out_var err_var)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env CUDA_VISIBLE_DEVICES= ${BENCH} ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR
      "normkit_bench ${ARGN} exited with '${rc}'\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
  set(${err_var} "${err}" PARENT_SCOPE)
endfunction()

set(message_regex "normkit_bench: no CUDA device is visible \\([^\n]+\\); nothing to measure\n")

run_bench(out err)
if(NOT err MATCHES "^${message_regex}$")
  message(FATAL_ERROR "expected exactly one line on stderr, got:\n${err}")
endif()
if(NOT out STREQUAL "")
  message(FATAL_ERROR "expected nothing on stdout, got:\n${out}")
endif()

# The shape sets, counted: set name and the number of benchmarks it must register.
set(expected_counts
  "^copy/=2"
  "^bn_resnet50/=324"          # 9 layers x 2 N x 2 layouts x 3 dtypes x 3 phases
  "^bn_in_place/=48"           # 4 NCHW layers x 2 N x 2 dtypes x 3 phases
  "^bn_in_place/.*/NHWC/=0"    # NCHW only: the layout whose batch tiles read in place apart
  "^bn_features/=48"           # 4 N x C x 2 layouts x 2 dtypes x 3 phases
  "^bn_features/.*/HW1/=48"    # S = 1 throughout
  "^bn_mobilenet_v2/=48"       # 4 layers x 2 layouts x 2 dtypes x 3 phases
  "^rows/=144"                 # 2 ops x 12 D x 3 dtype pairs x 2 directions
  "^long_rows/=48"             # 2 ops x 3 dtype pairs x 2 D x 2 M x 2 directions
  "^fused_rows/=42"            # 2 ops x 3 shapes x (4 forward + 3 backward fusions)
  "/residual_zc_fp8/fwd/=6"    # the whole fp8 pre-norm block: 2 ops x 3 shapes, forward only
  "fp8/bwd/=0"                 # an fp8 output does not change the backward: no such case
  "^fused_channels/=38"        # 6 batch-norm shapes x 5 + 4 group-norm shapes x 2
  "/bn_relu/infer_fwd/=6"      # batch norm + ReLU in inference, at every batch-norm shape
  "/bn_add_relu/=12"           # the residual block's norm: training forward and backward
  "/gn_silu/=8"                # 4 U-Net shapes, forward and backward
  "^instance_norm/=108"        # 3 C x 3 HW x 2 layouts x 2 dtypes x 3 phases
  "^group_norm/=192"           # 2 N x 3 C x 4 HW x 2 layouts x 2 dtypes x 2 directions
  "^small/=50"                 # 2 ops x 2 D x 4 M x 2 directions + 3 N x 2 layouts x 3 phases
  "^check/=40")                # the GPU check's subset: 14 row, 22 channel, 4 launch-bound
foreach(entry IN LISTS expected_counts)
  string(REPLACE "=" ";" pair "${entry}")
  list(GET pair 0 filter)
  list(GET pair 1 expected)
  run_bench(out err --benchmark_list_tests --benchmark_filter=${filter})
  string(REGEX MATCHALL "[^\n]+" names "${out}")
  list(LENGTH names count)
  if(NOT count EQUAL expected)
    message(FATAL_ERROR "--benchmark_filter=${filter} listed ${count} benchmarks, expected "
                        "${expected}:\n${out}")
  endif()
endforeach()

# The naming scheme, on one name of each set.
set(expected_names
  "bn_resnet50/N256/C64/HW112/NHWC/bf16/train_fwd"
  "bn_in_place/N32/C512/HW7/NCHW/fp32/bwd"
  "bn_features/N65536/C512/HW1/NHWC/bf16/train_fwd"
  "bn_mobilenet_v2/N128/C16/HW112/NCHW/fp32/infer_fwd"
  "rows/layer_norm/D1024/M131072/bf16/w_fp32/fwd"
  "rows/rms_norm/D65536/M1024/fp32/w_fp32/bwd"
  "long_rows/layer_norm/D262144/M8/bf16/w_bf16/fwd"
  "instance_norm/N8/C64/HW256/NCHW/fp32/infer_fwd"
  "group_norm/N2/C320/HW64/G32/NHWC/bf16/fwd"
  "small/layer_norm/D4096/M16/bf16/w_bf16/bwd"
  "small/batch_norm/N1/C256/HW14/NCHW/bf16/train_fwd"
  "check/layer_norm/D1024/M131072/bf16/w_fp32/bwd"
  "check/group_norm/N8/C640/HW64/G32/NHWC/bf16/fwd"
  "check/rms_norm/D1024/M1/bf16/w_bf16/fwd"
  "fused_rows/layer_norm/D4096/M8192/bf16/w_bf16/residual/fwd"
  "fused_rows/rms_norm/D8192/M4096/bf16/w_bf16/residual_zc_fp8/fwd"
  "fused_rows/layer_norm/D1024/M16384/bf16/w_bf16/residual_zc/bwd"
  "fused_rows/rms_norm/D4096/M8192/bf16/w_bf16/zc/bwd"
  "fused_channels/batch_norm/N256/C64/HW56/NHWC/fp16/bn_add_relu/train_fwd"
  "fused_channels/batch_norm/N32/C512/HW7/NCHW/fp32/bn_relu/infer_fwd"
  "fused_channels/group_norm/N8/C640/HW32/G32/NCHW/fp16/gn_silu/bwd")
run_bench(out err --benchmark_list_tests)
foreach(name IN LISTS expected_names)
  string(FIND "${out}" "\n${name}/" position)
  if(position EQUAL -1)
    message(FATAL_ERROR "benchmark ${name} is not listed:\n${out}")
  endif()
endforeach()
# Every in-place case has its out-of-place twin in bn_resnet50 (summarize.py sets them side by
# side).
string(REGEX MATCHALL "\nbn_in_place/[^\n]+" in_place_names "${out}")
foreach(name IN LISTS in_place_names)
  string(REPLACE "\nbn_in_place/" "\nbn_resnet50/" twin "${name}")
  string(FIND "${out}" "${twin}" position)
  if(position EQUAL -1)
    message(FATAL_ERROR "the in-place case${name} has no twin${twin} in bn_resnet50")
  endif()
endforeach()
# The check, long_rows, fused_rows, fused_channels, bn_features and bn_mobilenet_v2 sets are
# defined twice, here and in torch_compare.py (so that summarize.py joins the two runs): the same
# names on both sides.
if(DEFINED PYTHON AND DEFINED TORCH_COMPARE)
  foreach(set_name check long_rows fused_rows fused_channels bn_features bn_mobilenet_v2)
    run_bench(out err --benchmark_list_tests --benchmark_filter=^${set_name}/)
    string(REGEX REPLACE "/iterations:1/manual_time" "" out "${out}")
    string(REGEX MATCHALL "[^\n]+" bench_names "${out}")
    execute_process(COMMAND ${PYTHON} ${TORCH_COMPARE} --sets ${set_name} --list
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "torch_compare.py --sets ${set_name} --list exited with '${rc}'\n${err}")
    endif()
    string(REGEX MATCHALL "[^\n]+" torch_names "${out}")
    list(SORT bench_names)
    list(SORT torch_names)
    if(NOT bench_names STREQUAL torch_names)
      message(FATAL_ERROR "the ${set_name} set differs between normkit_bench and "
                          "torch_compare.py:\nnormkit_bench:\n${bench_names}\n"
                          "torch_compare.py:\n${torch_names}")
    endif()
  endforeach()
endif()
message(STATUS "normkit_bench without a GPU: the message, exit status 0, every set listed")
