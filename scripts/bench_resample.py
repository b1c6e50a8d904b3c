import numpy as np, soxr, time
def holdback(inr,outr,q):
    s=soxr.ResampleStream(inr,outr,1,dtype='int16',quality=q)
    n=inr//50; x=(np.sin(2*np.pi*440*np.arange(inr)/inr)*8000).astype(np.int16)
    out=0; 
    for i in range(0,inr,n): out+=len(s.resample_chunk(x[i:i+n]))
    return (inr*outr/inr-out)/outr*1000
def quality(inr,outr,q):
    # SNR of 1 kHz tone + alias rejection of a 6 kHz tone (24k->8k)
    t=np.arange(inr*2)/inr
    x=(np.sin(2*np.pi*1000*t)*10000).astype(np.int16)
    y=soxr.resample(x,inr,outr,quality=q).astype(float)
    tt=np.arange(len(y))/outr; ref=np.sin(2*np.pi*1000*tt)*10000
    # fit phase
    A=np.vstack([np.sin(2*np.pi*1000*tt),np.cos(2*np.pi*1000*tt)]).T
    c,_,_,_=np.linalg.lstsq(A[200:-200],y[200:-200],rcond=None); fit=A@c
    snr=10*np.log10(np.sum(fit[200:-200]**2)/np.sum((y-fit)[200:-200]**2))
    alias=None
    if outr<inr:
        x2=(np.sin(2*np.pi*6000*t)*10000).astype(np.int16)
        y2=soxr.resample(x2,inr,outr,quality=q).astype(float)
        alias=20*np.log10(10000/ (np.sqrt(2)*np.std(y2[200:-200])+1e-9))
    return snr,alias
def cost(inr,outr,q):
    s=soxr.ResampleStream(inr,outr,1,dtype='int16',quality=q); n=inr//50
    x=(np.random.randn(n)*1000).astype(np.int16); t=time.perf_counter()
    for i in range(2000): s.resample_chunk(x)
    return (time.perf_counter()-t)/2000*1e6
for q in ['QQ','LQ','MQ','HQ','VHQ']:
    print(q, 'in 8k->24k hold %.1fms snr %.1f cost %.1fus'%(holdback(8000,24000,q),quality(8000,24000,q)[0],cost(8000,24000,q)),
      '| out 24k->8k hold %.1fms snr %.1f aliasrej %.1fdB cost %.1fus'%(holdback(24000,8000,q),*quality(24000,8000,q),cost(24000,8000,q)))
