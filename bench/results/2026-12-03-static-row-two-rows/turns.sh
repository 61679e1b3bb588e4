#!/usr/bin/env bash
# Two rows of the row backward's register kernel with and without the loop unrolled by two, from
# the sm_90 objects BEFORE (one row a turn) and AFTER (two rows a turn for bf16 rows). Branch
# indices are those sass_turn.py --list prints for each object: lane-group rows where given,
# dh_extra's branch taken (none) and dresidual's store skipped; BEFORE's single-row turn is
# counted twice.
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
t "$before" "$k" 517 564;          t "$after" "$k" 557 604 959 1006
t "$before" "$k" 320 517 564;      t "$after" "$k" 373 557 604 959 1006 775
t "$before" "$k" 547;              t "$after" "$k" 587 989
k='backward_in_registers<__nv_bfloat16, float, 8, 1>'
t "$before" "$k" 515 562;          t "$after" "$k" 543 590 936 983
t "$before" "$k" 322 515 562;      t "$after" "$k" 365 543 590 936 983 759
t "$before" "$k" 545;              t "$after" "$k" 573 966
