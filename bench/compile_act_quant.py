"""Does torch.compile pay for itself on the activation fake-quant? First-call (compile) time against the
per-call saving, one thread, a (32, 64, 384) bf16 activation. Result: bench/results/compile_act_quant.json.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python bench/compile_act_quant.py > bench/results/compile_act_quant.json
"""
import time, torch, sys, json
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))
torch.manual_seed(0)
def act(x):
    s = x.detach().abs().amax(dim=-1, keepdim=True).float() * (2 / 256)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.div(x.float(), s).round().clamp(-128, 127).mul(s).to(x.dtype)
c = torch.compile(act, dynamic=True)
x = torch.randn(32, 64, 384).to(torch.bfloat16)
t = time.perf_counter(); c(x); first = time.perf_counter() - t
x2 = torch.randn(32, 51, 384).to(torch.bfloat16)
t = time.perf_counter(); c(x2); second_shape = time.perf_counter() - t
def med(f, x, n=30):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2]
e, k = [], []
for _ in range(3):
    e.append(med(act, x)); k.append(med(c, x))
print(json.dumps({"compile_first_call_s": first, "new_shape_call_s": second_shape, "eager_ms": 1e3 * min(e), "compiled_ms": 1e3 * min(k),
                  "equal": torch.equal(act(x), c(x))}))
