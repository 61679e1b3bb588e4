# ctest bench_summarize (label cpu): summarize.py on the synthetic files of testdata/ (hand-made,
# not measurements). Checks the tables, the cuDNN and torch ratios, the geometric means, the use
# of the median aggregate of repetitions, the worst-five lists and the error list.
#   cmake -DPYTHON=<python3> -DSCRIPT=<summarize.py> -DDATA=<testdata folder>
#         -P check_summarize.cmake

execute_process(
  COMMAND ${PYTHON} ${SCRIPT} ${DATA}/synthetic_results.json --torch ${DATA}/synthetic_torch.json
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "summarize.py exited with '${rc}'\n${out}\n${err}")
endif()

set(expected
  "## bn_resnet50\n"
  "\\| N256 C64 HW112 \\| bf16 \\| NHWC \\| train_fwd \\| 900 \\| 0.900 \\| 2.00 \\| 4.00 \\| 1.00 \\|"
  "\\| N256 C64 HW112 \\| bf16 \\| NCHW \\| infer_fwd \\| 950 \\| 0.950 \\| n/a \\|"
  "geometric mean vs cuDNN: 1.00 \\(2 cases\\); vs torch eager: 4.00; vs torch.compile: 1.00"
  "1 case\\(s\\) without a cuDNN ratio: cuDNN: not supported \\(SYNTHETIC_STATUS\\)"
  "## rows/layer_norm\n"
  "\\| D1024 M131072 \\| bf16 \\(w fp32\\) \\| - \\| fwd \\| 800 \\| 0.800 \\| 1.50 \\| 1.00 \\| n/a \\|"
  "## small/rms_norm\n"
  "\\| 3.00 \\| 9.00 \\|"
  "\\| N8 C64 HW256 \\| fp32 \\| NCHW \\| bwd \\| 777 \\| 0.777 \\| 1.25 \\|"
  "## Worst 5 by frac_of_copy \\(small set excluded\\)\n\n1. `group_norm/N2/C320/HW8/G32/NHWC/bf16/fwd`: 0.020"
  "## Worst 5 by vs_cudnn\n\n1. `bn_resnet50/N256/C64/HW112/NCHW/bf16/train_fwd`: 0.500"
  "## Errors\n\n- `instance_norm/N8/C256/HW256/NHWC/bf16/train_fwd`: SYNTHETIC error")
foreach(pattern IN LISTS expected)
  if(NOT out MATCHES "${pattern}")
    message(FATAL_ERROR "summarize.py output lacks /${pattern}/:\n${out}")
  endif()
endforeach()
if(out MATCHES "copy/kernel")
  message(FATAL_ERROR "the copy entries must not appear in the op tables:\n${out}")
endif()
message(STATUS "summarize.py: tables, ratios, geometric means, aggregates, worst cases, errors")
