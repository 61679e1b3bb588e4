# ctest bench_summarize (label cpu): summarize.py on the synthetic files of testdata/ (hand-made,
# not measurements). Checks the header's cluster counts, the tables (a fused_rows case with its
# fusion in the shape, without a cuDNN ratio; a fused_channels case with its fusion and a cuDNN
# ratio), the cuDNN and torch ratios, the geometric means, the section-5 column and target count
# (group_norm), the batch-norm sets bn_features and bn_mobilenet_v2 in tables of their own, the use
# of the median aggregate of repetitions, the worst-five lists, the table of in-place cases beside
# their out-of-place twins (one pair; one in-place case without its twin left out) and the error
# list; then the same on names of the GPU check's `check` set (ops in the name, launch-bound cases
# among the others) joined with a file in torch_compare.py's own output format.
#   cmake -DPYTHON=<python3> -DSCRIPT=<summarize.py> -DDATA=<testdata folder>
#         -P check_summarize.cmake

execute_process(
  COMMAND ${PYTHON} ${SCRIPT} ${DATA}/synthetic_results.json --torch ${DATA}/synthetic_torch.json
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "summarize.py exited with '${rc}'\n${out}\n${err}")
endif()

set(expected
  "clusters of 204 KiB blocks held at once: 12 of 8, 6 of 16"
  "## bn_resnet50\n"
  "\\| N256 C64 HW112 \\| bf16 \\| NHWC \\| train_fwd \\| 900 \\| 0.900 \\| 2.00 \\| 4.00 \\| 1.00 \\|"
  "\\| N256 C64 HW112 \\| bf16 \\| NCHW \\| infer_fwd \\| 950 \\| 0.950 \\| n/a \\|"
  "geometric mean vs cuDNN: 1.00 \\(2 cases\\); vs torch eager: 4.00; vs torch.compile: 1.00"
  "1 case\\(s\\) without a cuDNN ratio: cuDNN: not supported \\(SYNTHETIC_STATUS\\)"
  "## rows/layer_norm\n"
  "\\| D1024 M131072 \\| bf16 \\(w fp32\\) \\| - \\| fwd \\| 800 \\| 0.800 \\| 1.50 \\| 1.00 \\| n/a \\|"
  "\\| N2 C320 HW8 G32 \\| bf16 \\| NHWC \\| fwd \\| 20 \\| 0.020 \\| 0.020 \\| n/a \\|"
  "\\| N8 C1280 HW64 G32 \\| bf16 \\| NCHW \\| bwd \\| 500 \\| 0.500 \\| 0.875 \\| n/a \\|"
  "at DESIGN.md section 5's target \\(§5 bytes\\): 1 of 2 cases"
  "## small/rms_norm\n"
  "\\| 3.00 \\| 9.00 \\|"
  "\\| N8 C64 HW256 \\| fp32 \\| NCHW \\| bwd \\| 777 \\| 0.777 \\| 1.25 \\|"
  "## Worst 5 by frac_of_copy \\(launch-bound cases excluded\\)\n\n1. `group_norm/N2/C320/HW8/G32/NHWC/bf16/fwd`: 0.020"
  "## Worst 5 by vs_cudnn\n\n1. `bn_resnet50/N256/C64/HW112/NCHW/bf16/train_fwd`: 0.500"
  "## fused_rows/layer_norm\n"
  "\\| D4096 M8192 residual_zc \\| bf16 \\(w bf16\\) \\| - \\| bwd \\| 600 \\| 0.600 \\| n/a \\| 3.00 \\| 1.50 \\|"
  "1 case\\(s\\) without a cuDNN ratio: cuDNN: not compared \\(fused residual_zc form"
  "## fused_channels/batch_norm\n"
  "\\| N256 C64 HW56 bn_add_relu \\| fp16 \\| NHWC \\| bwd \\| 700 \\| 0.700 \\| 1.10 \\|"
  "geometric mean vs cuDNN: 1.10 \\(1 cases\\)"
  "## bn_features\n"
  "\\| N65536 C512 HW1 \\| bf16 \\| NHWC \\| train_fwd \\| 860 \\| 0.860 \\| 0.860 \\| 1.75 \\| 2.50 \\| 1.25 \\|"
  "## bn_mobilenet_v2\n"
  "\\| N128 C16 HW112 \\| fp32 \\| NHWC \\| bwd \\| 600 \\| 0.600 \\| 0.600 \\| 0.80 \\|"
  "at DESIGN.md section 5's target \\(§5 bytes\\): 0 of 1 cases"
  "## In place against out of place \\(bn_in_place over bn_resnet50\\)\n"
  "\\| N256 C64 HW112 \\| bf16 \\| NCHW \\| train_fwd \\| 400 \\| 500 \\| 1.250 \\|"
  "geometric mean of the time ratios: 1.250 \\(1 cases\\)"
  "## Errors\n\n- `instance_norm/N8/C256/HW256/NHWC/bf16/train_fwd`: SYNTHETIC error")
foreach(pattern IN LISTS expected)
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "summarize.py output lacks /${pattern}/:\n${out}")
  endif()
endforeach()
# The in-place backward has no twin in the file: it is in its family's table, not in the pairs'.
if(out MATCHES "time in place / out of place[^#]*\\| bwd \\|")
  message(FATAL_ERROR "an in-place case without its twin is in the in-place table:\n${out}")
endif()
if(out MATCHES "copy/kernel")
  message(FATAL_ERROR "the copy entries must not appear in the op tables:\n${out}")
endif()
message(STATUS "summarize.py: tables, ratios, geometric means, aggregates, worst cases, errors")

# The check set: families per op, a launch-bound row with its µs/call beside a bandwidth-bound
# one, the torch ratios read from torch_compare.py's JSON, launch-bound cases kept out of the
# worst frac_of_copy list.
execute_process(
  COMMAND ${PYTHON} ${SCRIPT} ${DATA}/synthetic_check_results.json
          --torch ${DATA}/synthetic_check_torch.json
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "summarize.py (check set) exited with '${rc}'\n${out}\n${err}")
endif()
set(expected
  "## check/layer_norm\n"
  "\\| D1024 M131072 \\| bf16 \\(w fp32\\) \\| - \\| fwd \\| 850 \\| 0.850 \\| 1.20 \\| 2.50 \\| 1.50 \\| n/a \\| n/a \\|"
  "\\| D4096 M16 \\| bf16 \\(w bf16\\) \\| - \\| fwd \\| 50 \\| 0.050 \\| 2.00 \\| 10.00 \\| n/a \\| 4.00 \\| 8.00 \\|"
  "## check/batch_norm\n"
  "\\| N256 C64 HW56 \\| bf16 \\| NHWC \\| train_fwd \\| 700 \\| 0.700 \\| 0.80 \\| 1.25 \\| n/a \\|"
  "## check/group_norm\n"
  "## Worst 5 by frac_of_copy \\(launch-bound cases excluded\\)\n\n1. `check/group_norm/N8/C640/HW64/G32/NHWC/bf16/fwd`: 0.600"
  "- `check/instance_norm/N8/C128/HW128/NHWC/bf16/bwd`: SYNTHETIC check error")
foreach(pattern IN LISTS expected)
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "summarize.py (check set) output lacks /${pattern}/:\n${out}")
  endif()
endforeach()
if(out MATCHES "D4096/M16[^\n]*: 0.050")
  message(FATAL_ERROR "a launch-bound case is in the worst frac_of_copy list:\n${out}")
endif()
message(STATUS "summarize.py: check set names, launch-bound rows, torch_compare.py's JSON")

# A results file cut short (a run stopped at its time limit): read up to its last complete
# benchmark, and said so.
file(READ ${DATA}/synthetic_check_results.json text LIMIT 3500)
set(cut_file ${CMAKE_CURRENT_BINARY_DIR}/summarize_cut_short.json)
file(WRITE ${cut_file} "${text}")
execute_process(COMMAND ${PYTHON} ${SCRIPT} ${cut_file}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(REMOVE ${cut_file})
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "summarize.py on a file cut short exited with '${rc}'\n${out}\n${err}")
endif()
foreach(pattern "\\*\\*Partial run\\*\\*: the results file was cut short; the 4 benchmarks"
                "\\| D1024 M131072 \\| bf16 \\(w fp32\\) \\| - \\| fwd \\| 850 \\|")
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "summarize.py (file cut short) output lacks /${pattern}/:\n${out}")
  endif()
endforeach()
message(STATUS "summarize.py: a results file cut short")
