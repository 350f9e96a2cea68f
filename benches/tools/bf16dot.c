// Measures this machine's AVX-512 BF16 dot-product limit: vdpbf16ps (32 bf16 products summed in
// pairs into 16 f32 lanes: 64 flops per instruction) GFLOP/s on 1 and 2 threads. The limit of the
// llvm target's bf16 GEMM on hosts without AMX. Run by `opc bench` (cli/src/bench.rs).
// Build and run: gcc -O2 -mavx512f -mavx512bf16 -pthread bf16dot.c -o bf16dot && ./bf16dot
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static void* dot_loop(void* arg){
  long iters=(long)arg;
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0;
  __m512bh x=(__m512bh)_mm512_set1_epi16(0x3f80), y=(__m512bh)_mm512_set1_epi16(0x3a83);
  for(long i=0;i<iters;i++){
    a0=_mm512_dpbf16_ps(a0,x,y);a1=_mm512_dpbf16_ps(a1,x,y);a2=_mm512_dpbf16_ps(a2,x,y);a3=_mm512_dpbf16_ps(a3,x,y);
    a4=_mm512_dpbf16_ps(a4,x,y);a5=_mm512_dpbf16_ps(a5,x,y);a6=_mm512_dpbf16_ps(a6,x,y);a7=_mm512_dpbf16_ps(a7,x,y);
    a8=_mm512_dpbf16_ps(a8,x,y);a9=_mm512_dpbf16_ps(a9,x,y);a10=_mm512_dpbf16_ps(a10,x,y);a11=_mm512_dpbf16_ps(a11,x,y);
  }
  __m512 s=_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)),_mm512_add_ps(_mm512_add_ps(a4,a5),_mm512_add_ps(a6,a7)));
  s=_mm512_add_ps(s,_mm512_add_ps(_mm512_add_ps(a8,a9),_mm512_add_ps(a10,a11)));
  float out[16]; _mm512_storeu_ps(out,s); return (void*)(long)(out[0]>1e30);
}
int main(){
  for(int th=1;th<=2;th++){
    long it=100000000;
    pthread_t t[2]; double t0=now();
    for(int i=0;i<th;i++) pthread_create(&t[i],0,dot_loop,(void*)it);
    for(int i=0;i<th;i++) pthread_join(t[i],0);
    double dt=now()-t0; printf("AVX-512 BF16 vdpbf16ps, %d threads: %.1f GFLOP/s\n", th, th*it*12.0*64/dt/1e9);
  }
}
