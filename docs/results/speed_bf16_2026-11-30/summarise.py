import re,glob,statistics,sys
d=sys.argv[1]
V=['before','after','after-compile','after-bf16','after-bf16-compile']
R={}
for v in V:
    for f in sorted(glob.glob(f'{d}/{v}-[0-9].md')):
        txt=open(f).read()
        m=re.search(r'float32 matmul \(1024\^3\): ([\d.]+) GFLOP/s before, ([\d.]+) after',txt)
        for line in txt.splitlines():
            c=[x.strip() for x in line.split('|')]
            if len(c)>5 and c[1] in ('none','cadr','x0-routed-smooth'):
                R.setdefault((v,c[1]),[]).append((float(c[4]),float(c[6]),float(m.group(1)),float(m.group(2))))
for r in ('none','cadr','x0-routed-smooth'):
    b=statistics.median(x[0] for x in R[('before',r)])
    for v in V:
        xs=R.get((v,r),[])
        if not xs: continue
        ips=[x[0] for x in xs]; med=statistics.median(ips)
        frac=[x[1]/max(x[2],x[3]) for x in xs]; frac2=[x[1]/min(x[2],x[3]) for x in xs]
        print(f"{r:18s} {v:20s} ips {ips} median {med:.1f} x{med/b:.2f}  of fp32 matmul (hi/lo reading) {[f'{a:.0%}/{c:.0%}' for a,c in zip(frac,frac2)]}")
