// Measures this machine's AVX-512 compute limits with independent accumulator chains: FMA fp32
// (vfmadd, 32 flops per instruction) and BF16 dot products (vdpbf16ps: 32 bf16 products summed
// in pairs into 16 f32 lanes, 64 flops per instruction), GFLOP/s on 1 and 2 threads. Every chain
// starts from a different value, so the compiler cannot merge them into one (which would time
// the FMA latency instead of the throughput). 24 chains: vdpbf16ps has a longer latency than
// vfmadd, and 12 chains left it latency-bound on znver5 (reading ~60% of its throughput). Run by `opc bench` (cli/src/bench.rs).
// Build and run: gcc -O2 -mavx512f -mavx512bf16 -pthread dotpeak.c -o dotpeak && ./dotpeak
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#define CHAINS 24 /* a0..a23 */
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
volatile float sink; // keeps the chains' results live
#define DECL(init) __m512 a0=init(0),a1=init(1),a2=init(2),a3=init(3),a4=init(4),a5=init(5),a6=init(6),a7=init(7),a8=init(8),a9=init(9),a10=init(10),a11=init(11),\
  a12=init(12),a13=init(13),a14=init(14),a15=init(15),a16=init(16),a17=init(17),a18=init(18),a19=init(19),a20=init(20),a21=init(21),a22=init(22),a23=init(23)
#define STEP(op) a0=op(a0);a1=op(a1);a2=op(a2);a3=op(a3);a4=op(a4);a5=op(a5);a6=op(a6);a7=op(a7);a8=op(a8);a9=op(a9);a10=op(a10);a11=op(a11);\
  a12=op(a12);a13=op(a13);a14=op(a14);a15=op(a15);a16=op(a16);a17=op(a17);a18=op(a18);a19=op(a19);a20=op(a20);a21=op(a21);a22=op(a22);a23=op(a23)
#define SUM() sink=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7))),\
  _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)),_mm512_add_ps(_mm512_add_ps(a12,a13),_mm512_add_ps(a14,a15)))),\
  _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a16,a17),_mm512_add_ps(a18,a19)),_mm512_add_ps(_mm512_add_ps(a20,a21),_mm512_add_ps(a22,a23)))))
#define FINIT(c) _mm512_set1_ps(1.0f+(c)*1e-3f)
#define DINIT(c) _mm512_set1_ps((float)(c))
static void* fma_loop(void* arg){
  long iters=(long)arg; DECL(FINIT);
  __m512 b=_mm512_set1_ps(0.9999f), d=_mm512_set1_ps(1e-4f);
#define FMA(x) _mm512_fmadd_ps(x,b,d)
  for(long i=0;i<iters;i++){ STEP(FMA); }
  SUM(); return 0;
}
static void* dot_loop(void* arg){
  long iters=(long)arg; DECL(DINIT);
  __m512bh x=(__m512bh)_mm512_set1_epi16(0x3f80), y=(__m512bh)_mm512_set1_epi16(0x3a83);
#define DOT(acc) _mm512_dpbf16_ps(acc,x,y)
  for(long i=0;i<iters;i++){ STEP(DOT); }
  SUM(); return 0;
}
static void run(const char* what, void*(*f)(void*), double flops_per_inst){
  for(int th=1;th<=2;th++){
    long it=50000000;
    pthread_t t[2]; double t0=now();
    for(int i=0;i<th;i++) pthread_create(&t[i],0,f,(void*)it);
    for(int i=0;i<th;i++) pthread_join(t[i],0);
    double dt=now()-t0; printf("%s, %d threads: %.1f GFLOP/s\n", what, th, th*it*(double)CHAINS*flops_per_inst/dt/1e9);
  }
}
int main(){
  run("AVX-512 FMA fp32 (independent chains)", fma_loop, 32);
  run("AVX-512 BF16 vdpbf16ps", dot_loop, 64);
}
