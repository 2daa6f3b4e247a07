"""Eltwise: element-wise SUM (with per-bottom coefficients), PROD or MAX of the bottoms."""
from __future__ import annotations

from ..cuda import eltwise as gpu
from ..errors import NetError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb

PROD, SUM, MAX = pb.EltwiseParameter.PROD, pb.EltwiseParameter.SUM, pb.EltwiseParameter.MAX


@register("Eltwise")
class EltwiseLayer(Layer):
    min_bottoms = 2
    exact_tops = 1
    saved_for_backward = ("max_index",)  # MAX: which bottom won, per element

    def backward_inputs(self) -> tuple[int, ...]:
        return tuple(range(len(self.param.bottom))) if self.op == PROD else ()

    def backward_outputs(self) -> tuple[int, ...]:
        return (0,) if self.op == PROD and not self.stable_prod_grad else ()

    def writes_planned_output(self, top_index: int) -> bool:
        return self.op == SUM

    def layer_setup(self, bottoms, tops) -> None:
        p = self.param.eltwise_param
        self.op = p.operation
        if p.coeff and (self.op != SUM or len(p.coeff) != len(bottoms)):
            raise NetError(f"layer '{self.name}': coeff is for SUM only, one per bottom "
                           f"({len(bottoms)} bottoms, {len(p.coeff)} coeff)")
        self.coeffs = list(p.coeff) or [1.0] * len(bottoms)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottoms, tops) -> None:
        for b in bottoms[1:]:
            if b.shape != bottoms[0].shape:
                raise NetError(f"layer '{self.name}': bottom shapes differ: {bottoms[0].shape} vs {b.shape}")
        tops[0].reshape(bottoms[0].shape)

    def forward_cpu(self, bottoms, tops) -> None:
        xp = self.xp
        if self.op == SUM:
            terms = (b.data if c == 1 else b.data * b.dtype.type(c) for b, c in zip(bottoms, self.coeffs))
            out = xp.add(next(terms), next(terms), out=self.planned_outputs.get(0))  # two bottoms at least
            for term in terms:
                out += term
            tops[0].data = out
        elif self.op == PROD:
            out = bottoms[0].data * bottoms[1].data
            for b in bottoms[2:]:
                out *= b.data
            tops[0].data = out
        else:
            # Ties go to the later of the first two bottoms, then to the earliest winner (Caffe).
            a, b = bottoms[0].data, bottoms[1].data
            first = a > b
            out = xp.where(first, a, b)
            mask = xp.where(first, 0, 1).astype(xp.int32)
            for k, blob in enumerate(bottoms[2:], start=2):
                better = blob.data > out
                out = xp.where(better, blob.data, out)
                mask[better] = k
            self.max_index = mask if self.needs_backward else None
            tops[0].data = out

    def backward_cpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        donated = self.top_diff_donated  # the memory plan's word: nothing reads dy after, one bottom may take it
        for i, b in enumerate(bottoms):
            if not propagate_down[i]:
                continue
            if self.op == SUM and self.coeffs[i] == 1:
                b.diff, donated = (dy if donated else dy.copy()), False
            elif self.op == SUM:
                b.diff = dy * dy.dtype.type(self.coeffs[i])
            elif self.op == PROD:
                if self.stable_prod_grad:
                    others = None
                    for j, o in enumerate(bottoms):
                        if j != i:
                            others = o.data.copy() if others is None else others.__imul__(o.data)
                else:
                    others = tops[0].data / b.data
                b.diff = others * dy
            else:
                b.diff = dy * (self.max_index == i)

    def forward_gpu(self, bottoms, tops) -> None:
        datas = [b.data for b in bottoms]
        if self.op == SUM:
            tops[0].data = gpu.weighted_sum(datas, self.coeffs, out=self.planned_outputs.get(0))
        elif self.op == PROD:
            tops[0].data = gpu.product(datas)
        else:
            out, mask = gpu.maximum_with_mask(datas)
            self.max_index = mask if self.needs_backward else None
            tops[0].data = out

    def backward_gpu(self, tops, propagate_down, bottoms) -> None:
        dy = tops[0].diff
        if self.op == SUM:
            wanted = [i for i in range(len(bottoms)) if propagate_down[i]]
            for i, diff in zip(wanted, gpu.scaled_copies(dy, [self.coeffs[i] for i in wanted])):
                bottoms[i].diff = diff
            return
        for i, b in enumerate(bottoms):
            if not propagate_down[i]:
                continue
            if self.op == PROD and self.stable_prod_grad:
                b.diff = gpu.product([o.data for j, o in enumerate(bottoms) if j != i] + [dy])
            elif self.op == PROD:
                b.diff = gpu.product_grad_by_quotient(tops[0].data, b.data, dy)
            else:
                b.diff = gpu.maximum_grad(dy, self.max_index, i)
