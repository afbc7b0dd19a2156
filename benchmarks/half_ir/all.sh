#!/bin/bash
# all.sh LABEL: every case, Ir per element (split: steps 2..3 minus step 1, the first_step)
L=$1
per() { python3 -c "print(f'{$1/$2:.3f}')"; }
for args in "bf16_torch" "bf16_once" "f16_torch" "f16_once" "f32_bf16" \
            "bf16_torch 0.0001 1" "bf16_once 0.0001 1" "f32_bf16 0.0001 1"; do
  r=$(benchmarks/half_ir/run.sh $L $args); ir=${r##*Ir=}; echo "$L $args: $(per $ir 2097152)"
done
for args in "split_gbf16" "split_gbf16 0.0001 1"; do
  a=$(STEPS=1 benchmarks/half_ir/run.sh ${L}_1 $args); a=${a##*Ir=}
  b=$(STEPS=3 benchmarks/half_ir/run.sh ${L}_3 $args); b=${b##*Ir=}
  echo "$L $args: $(per $((b-a)) 2097152)"
done
