import torch, time
import torch.nn.functional as F
from mimkit.nn.attention import plain_attention
torch.manual_seed(0)
for (N,H,L,d) in [(64,3,17,64),(64,3,49,64),(64,3,65,64),(64,3,129,64),(8,12,197,64),(64,4,257,32)]:
    q,k,v=[torch.randn(N,H,L,d,requires_grad=True) for _ in range(3)]
    res={}
    for name,f in [("sdpa",lambda: F.scaled_dot_product_attention(q,k,v)),("plain",lambda: plain_attention(q,k,v))]:
        for _ in range(3): f().sum().backward()
        t=time.perf_counter(); 
        for _ in range(20): f().sum().backward()
        res[name]=(time.perf_counter()-t)/20*1e3
    print(N,H,L,d,{k:round(v,2) for k,v in res.items()})
