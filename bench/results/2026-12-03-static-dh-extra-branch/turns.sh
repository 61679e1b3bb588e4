#!/usr/bin/env bash
# One turn of the row backward's hot loops with and without dh_extra, before and after, from the
# sm_90 objects named BEFORE and AFTER (row_norm_backward.cu compiled as README.md says).
# Branch indices are those that sass_turn.py --list prints for each object: the first chooses
# lane-group rows where given, then dh_extra's branch taken (none) and dresidual's store skipped.
#   turns.sh BEFORE.o AFTER.o CUOBJDUMP
set -euo pipefail
before=$1 after=$2 cuobjdump=$3
turn="$(dirname "$0")/../../sass_turn.py"
t() {
  local obj=$1 kernel=$2; shift 2
  printf '%s | %s | %s | ' "$(basename "$obj")" "$kernel" "$*"
  python3 "$turn" --cuobjdump "$cuobjdump" "$obj" "$kernel" --take "$@" | head -1
}
k='backward_in_registers<__nv_bfloat16, __nv_bfloat16, 8, 1>'
t "$before" "$k" 545;          t "$after" "$k" 517 564;     t "$after" "$k" 547
t "$before" "$k" 323 545;      t "$after" "$k" 320 517 564; t "$after" "$k" 320 547
k='backward_in_registers<__half, __half, 8, 1>'
t "$before" "$k" 545;          t "$after" "$k" 517 564;     t "$after" "$k" 547
k='backward_in_registers<__nv_bfloat16, float, 8, 1>'
t "$before" "$k" 540;          t "$after" "$k" 515 562;     t "$after" "$k" 545
t "$before" "$k" 322 540;      t "$after" "$k" 322 515 562; t "$after" "$k" 322 545
k='backward_in_registers<__half, float, 8, 1>'
t "$before" "$k" 467;          t "$after" "$k" 443 490;     t "$after" "$k" 473
k='backward_in_registers<float, float, 4, 1>'
t "$before" "$k" 260;          t "$after" "$k" 260 405;     t "$after" "$k" 260 418
k='backward_in_registers<float, float, 4, 2>'
t "$before" "$k" 0;            t "$after" "$k" 513 581;     t "$after" "$k" 0
k='backward_staged<__nv_bfloat16, __nv_bfloat16, 8, 4>'
t "$before" "$k" 747 789;      t "$after" "$k" 749 804;     t "$after" "$k" 783
k='backward_generic<__nv_bfloat16, __nv_bfloat16, 8>'
t "$before" "$k" 369;          t "$after" "$k" 345 392;     t "$after" "$k" 375
