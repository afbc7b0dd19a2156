"""Named parameters in one contiguous buffer: :class:`FlatParams` (docs/flat-buffers.md).

``fastmomentum.SGD(flat_params, ...)`` steps all of them as one array, so a step costs one
work item whatever the number of tensors.
"""
import numpy as np

from . import _validation

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _shape(name, spec):
    """The shape of a spec: an int, a tuple of ints >= 0, or an array (its shape)."""
    if isinstance(spec, np.ndarray):
        return spec.shape
    shape = (spec,) if isinstance(spec, (int, np.integer)) else spec
    if (not isinstance(shape, tuple) or any(
            isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0
            for n in shape)):
        raise ValueError(f"FlatParams: `shapes[{name!r}]` must be a shape (an int or a tuple "
                         f"of ints >= 0) or an array; got {_validation.describe(spec)}")
    return tuple(int(n) for n in shape)


class FlatParams:
    """Named params (and their grads) as views into two contiguous 1-D buffers.

    ``FlatParams({"w": (64, 64), "b": 64}, dtype=np.float32)``: a value is a shape (the
    param starts at zero) or an array (its values are copied in, cast to ``dtype``).
    ``flat["w"]`` / :attr:`params` are the params' views into :attr:`buffer`,
    :attr:`grads` the grads' views into :attr:`grad_buffer` (write the gradients there);
    iteration, ``len``, ``in``, ``keys()``, ``items()`` as for a dict of the params.
    ``fastmomentum.SGD(flat, ...)`` steps :attr:`buffer` with :attr:`grad_buffer` in one
    call (``opt.step()``); :meth:`view` names the slots of another buffer of the same
    size, e.g. ``flat.view(opt.momentum_buffers[0])``.
    """

    def __init__(self, shapes, dtype=np.float32):
        if not hasattr(shapes, "items"):
            raise TypeError(f"FlatParams: `shapes` must be a dict of name -> shape or array; "
                            f"got {_validation.describe(shapes)}")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            dtype = None
        if dtype not in _DTYPES:
            raise TypeError(f"FlatParams: `dtype` must be float32 or float64; got {dtype}")
        specs = dict(shapes)
        for name in specs:
            if not isinstance(name, str):
                raise TypeError(f"FlatParams: the names in `shapes` must be str; got "
                                f"{_validation.describe(name)}")
        self._shapes = {name: _shape(name, spec) for name, spec in specs.items()}
        sizes = [int(np.prod(s)) for s in self._shapes.values()]
        self._slots = dict(zip(self._shapes, zip(np.cumsum([0] + sizes[:-1]).tolist(),
                                                 sizes)))
        total = sum(sizes)
        #: All params, one after the other in the order of ``shapes``.
        self.buffer = np.zeros(total, dtype=dtype)
        #: All grads, in the same layout.
        self.grad_buffer = np.zeros(total, dtype=dtype)
        #: name -> the param's view into :attr:`buffer`.
        self.params = self.view(self.buffer)
        #: name -> the grad's view into :attr:`grad_buffer`.
        self.grads = self.view(self.grad_buffer)
        for name, spec in specs.items():
            if isinstance(spec, np.ndarray):
                self.params[name][...] = spec

    def view(self, buffer):
        """name -> view of ``buffer`` (a C-contiguous 1-D array of :attr:`buffer`'s size)
        over that name's slot."""
        if (not isinstance(buffer, np.ndarray) or buffer.ndim != 1
                or buffer.size != self.buffer.size or not buffer.flags.c_contiguous):
            raise ValueError(f"FlatParams.view: `buffer` must be a C-contiguous 1-D array of "
                             f"{self.buffer.size} elements; got {_validation.describe(buffer)}")
        return {name: buffer[start:start + size].reshape(self._shapes[name])
                for name, (start, size) in self._slots.items()}

    def zero_grad(self):
        """Zero every grad in place (one pass over :attr:`grad_buffer`)."""
        self.grad_buffer.fill(0)

    def __getitem__(self, name):
        return self.params[name]

    def __iter__(self):
        return iter(self.params)

    def __len__(self):
        return len(self.params)

    def __contains__(self, name):
        return name in self.params

    def keys(self):
        return self.params.keys()

    def items(self):
        return self.params.items()

    def __repr__(self):
        return (f"FlatParams({len(self)} params, {self.buffer.size} elements, "
                f"{self.buffer.dtype})")
