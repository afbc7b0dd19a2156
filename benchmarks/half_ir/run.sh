#!/bin/bash
# run.sh LABEL CASE [wd] [nest]: prints Ir per element of the kernel entry points
# (TREE: the source tree to measure, built in place; default this checkout)
cd "$(dirname "$0")/../.."
label=$1; shift
out=/tmp/half_ir_cg.$label.$(echo "$@" | tr ' ' _)
STEPS=${STEPS:-2} PYTHONPATH=${TREE:-.} valgrind --tool=callgrind --callgrind-out-file=$out \
  --toggle-collect='*half_step_range*' --toggle-collect='*state_range*' \
  python benchmarks/half_ir/ir.py "$@" > /dev/null 2>$out.err
ir=$(grep -m1 "^summary:\|^totals:" $out | awk '{print $2}')
echo "$label $* Ir=$ir"
