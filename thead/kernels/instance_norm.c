/* Instance norm, modulation and leaky ReLU in two passes over channels-last memory (CPU).
 *
 * The inference path of LSR normalises a tensor and modulates it before every convolution:
 * act(IN(x) * g + b), with g, b per pixel and channel (SPADE), per channel (AdaIN) or absent.
 * Eager PyTorch runs that as batch norm (statistics, then normalise), addcmul and leaky ReLU:
 * five passes over memory. Here: one pass for the statistics, one that writes the result.
 *
 * Layout: x is [N, P, C] (P = H * W pixels, channels innermost: PyTorch's channels-last).
 * g and b have channel stride 1 and their own sample and pixel strides (0 broadcasts), so a
 * channel slice of a wider tensor or a per-channel vector is read in place.
 * dtype: 0 = float32, 1 = bfloat16 (uint16 storage; rounded to nearest even on store).
 * Statistics: biased variance, accumulated as float per block of rows, then double, around a
 * per-channel shift (the first pixel) so that a large mean does not cancel the variance.
 * The *_up variants take x at half the size and work on its bilinear x2 upsampling (half-pixel
 * centres, clamped at the edges: PyTorch's interpolate(scale_factor=2, mode="bilinear")),
 * computed on the fly: the 4x larger upsampled tensor is never written.
 * Built by thead/kernels/__init__.py with the C compiler found at run time (-O3 -march=native
 * -fopenmp; OpenMP resolves to the runtime torch has loaded).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_load(const uint16_t *p, int64_t i) {
    uint32_t u = (uint32_t)p[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40u); /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define ROWS 64 /* rows per float partial sum before it is added to the double total */

/* statistics helpers shared by the plain and the upsampled pass */
static inline void flush_rows(double *restrict s, float *restrict f, int64_t C2) {
    for (int64_t c = 0; c < C2; ++c) {
        s[c] += f[c];
        f[c] = 0.0f;
    }
}

static void finish_stats(const double *acc, const float *shift, int64_t C, int64_t P, double eps, float *mean,
                         float *rstd) {
    for (int64_t c = 0; c < C; ++c) {
        double m = acc[c] / (double)P, var = acc[C + c] / (double)P - m * m;
        mean[c] = (float)(shift[c] + m);
        rstd[c] = (float)(1.0 / sqrt((var > 0.0 ? var : 0.0) + eps));
    }
}

/* the OpenMP region of a statistics pass: per-thread sums s (double) and f (float, flushed
   every block of rows), merged into acc at the end */
#define STATS_REGION(C, WORK, ...)                                                              \
    memset(acc, 0, (size_t)(2 * (C)) * sizeof(double));                                         \
    const int64_t work = (WORK);                                                                \
    _Pragma("omp parallel num_threads(threads) if (work >= 32768)") {                           \
        double *s = calloc((size_t)(2 * (C)), sizeof(double));                                  \
        float *f = calloc((size_t)(2 * (C)), sizeof(float));                                    \
        __VA_ARGS__                                                                             \
        _Pragma("omp critical") for (int64_t c = 0; c < 2 * (C); ++c) acc[c] += s[c];           \
        free(s);                                                                                \
        free(f);                                                                                \
    }

#define DEFINE_STATS(NAME, T, LOAD)                                                                       \
    static void NAME(const T *x, int64_t N, int64_t P, int64_t C, double eps, float *mean, float *rstd,   \
                     int threads) {                                                                       \
        double *acc = calloc((size_t)(2 * C), sizeof(double));                                            \
        float *shift = malloc((size_t)C * sizeof(float));                                                 \
        for (int64_t n = 0; n < N; ++n) {                                                                 \
            const T *xn = x + n * P * C;                                                                  \
            for (int64_t c = 0; c < C; ++c) shift[c] = LOAD(xn, c);                                       \
            STATS_REGION(C, P * C, {                                                                      \
                _Pragma("omp for schedule(static)") for (int64_t p0 = 0; p0 < P; p0 += ROWS) {            \
                    for (int64_t p = p0; p < (p0 + ROWS < P ? p0 + ROWS : P); ++p) {                      \
                        const T *row = xn + p * C;                                                        \
                        _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) {                             \
                            float v = LOAD(row, c) - shift[c];                                            \
                            f[c] += v;                                                                    \
                            f[C + c] += v * v;                                                            \
                        }                                                                                 \
                    }                                                                                     \
                    flush_rows(s, f, 2 * C);                                                              \
                }                                                                                         \
            })                                                                                            \
            finish_stats(acc, shift, C, P, eps, mean + n * C, rstd + n * C);                              \
        }                                                                                                 \
        free(acc);                                                                                        \
        free(shift);                                                                                      \
    }

#define F32_LOAD(p, i) ((p)[i])
#define F32_STORE(p, i, v) ((p)[i] = (v))
#define BF16_STORE(p, i, v) ((p)[i] = bf16_round(v))

DEFINE_STATS(stats_f32, float, F32_LOAD)
DEFINE_STATS(stats_bf16, uint16_t, bf16_load)

/* channel c of one output pixel: v = the normalised value, then * g, + b, leaky ReLU, store */
#define MODULATE_STORE(NORMALISED, LOAD, STORE, HG, HB, ACT) \
    {                                                         \
        float v = (NORMALISED);                               \
        if (HG) v *= LOAD(gr, c);                             \
        if (HB) v += LOAD(br, c);                             \
        if (ACT) v = v > 0.0f ? v : v * slope;                \
        STORE(o, c, v);                                       \
    }

/* out = act((x - mean) * rstd * g + b), pixel by pixel */
#define DEFINE_MOD(NAME, T, LOAD, STORE, HG, HB, ACT)                                                     \
    static void NAME(const T *x, int64_t N, int64_t P, int64_t C, const float *mean, const float *rstd,   \
                     const T *g, int64_t gn, int64_t gp, const T *b, int64_t bn, int64_t bp, float slope, \
                     T *out, int threads) {                                                               \
        for (int64_t n = 0; n < N; ++n) {                                                                 \
            const float *mu = mean + n * C, *rs = rstd + n * C;                                           \
            _Pragma("omp parallel for schedule(static) num_threads(threads) if (P * C >= 32768)")         \
            for (int64_t p = 0; p < P; ++p) {                                                             \
                const T *restrict xr = x + (n * P + p) * C;                                               \
                T *restrict o = out + (n * P + p) * C;                                                    \
                const T *restrict gr = HG ? g + n * gn + p * gp : 0;                                      \
                const T *restrict br = HB ? b + n * bn + p * bp : 0;                                      \
                _Pragma("omp simd") for (int64_t c = 0; c < C; ++c)                                       \
                    MODULATE_STORE((LOAD(xr, c) - mu[c]) * rs[c], LOAD, STORE, HG, HB, ACT)               \
            }                                                                                             \
        }                                                                                                 \
    }

/* the 8 variants of a modulation kernel (g, b, activation: each present or not) and their table */
#define DEFINE_VARIANTS(DEFINE, PREFIX, T, LOAD, STORE)  \
    DEFINE(PREFIX##_000, T, LOAD, STORE, 0, 0, 0)         \
    DEFINE(PREFIX##_001, T, LOAD, STORE, 0, 0, 1)         \
    DEFINE(PREFIX##_010, T, LOAD, STORE, 0, 1, 0)         \
    DEFINE(PREFIX##_011, T, LOAD, STORE, 0, 1, 1)         \
    DEFINE(PREFIX##_100, T, LOAD, STORE, 1, 0, 0)         \
    DEFINE(PREFIX##_101, T, LOAD, STORE, 1, 0, 1)         \
    DEFINE(PREFIX##_110, T, LOAD, STORE, 1, 1, 0)         \
    DEFINE(PREFIX##_111, T, LOAD, STORE, 1, 1, 1)
#define VARIANT_TABLE(PREFIX) \
    {PREFIX##_000, PREFIX##_001, PREFIX##_010, PREFIX##_011, PREFIX##_100, PREFIX##_101, PREFIX##_110, PREFIX##_111}
#define VARIANT ((g != 0) * 4 + (b != 0) * 2 + (act != 0))

DEFINE_VARIANTS(DEFINE_MOD, mod_f32, float, F32_LOAD, F32_STORE)
DEFINE_VARIANTS(DEFINE_MOD, mod_bf16, uint16_t, bf16_load, BF16_STORE)

#define DISPATCH(SUFFIX, T)                                                                                \
    {                                                                                                      \
        typedef void (*fn)(const T *, int64_t, int64_t, int64_t, const float *, const float *, const T *, \
                           int64_t, int64_t, const T *, int64_t, int64_t, float, T *, int);                \
        static const fn table[8] = VARIANT_TABLE(mod_##SUFFIX);                                            \
        table[VARIANT]((const T *)x, N, P, C, mean, rstd, (const T *)g, gn, gp, (const T *)b, bn, bp, slope, \
                       (T *)out, threads);                                                                 \
    }

/* bilinear x2 source rows (or columns) of output index o, as PyTorch computes them */
static inline void up_source(int64_t o, int64_t size, int64_t *i0, int64_t *i1, float *l0, float *l1) {
    float src = 0.5f * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int64_t a = (int64_t)src;
    if (a > size - 1) a = size - 1;
    float lam = src - (float)a;
    lam = lam < 0.0f ? 0.0f : (lam > 1.0f ? 1.0f : lam);
    *i0 = a;
    *i1 = a + (a < size - 1 ? 1 : 0);
    *l1 = lam;
    *l0 = 1.0f - lam;
}

#define UP_VALUE(LOAD, c) \
    (ly0 * (lx0 * LOAD(r00, c) + lx1 * LOAD(r01, c)) + ly1 * (lx0 * LOAD(r10, c) + lx1 * LOAD(r11, c)))

#define UP_PIXEL_SETUP(T)                                                    \
    int64_t x0, x1;                                                          \
    float lx0, lx1;                                                          \
    up_source(X, W, &x0, &x1, &lx0, &lx1);                                    \
    const T *restrict r00 = hn + (y0 * W + x0) * C, *restrict r01 = hn + (y0 * W + x1) * C; \
    const T *restrict r10 = hn + (y1 * W + x0) * C, *restrict r11 = hn + (y1 * W + x1) * C;

/* statistics of the upsampled x: x is [N, H, W, C], the statistics those of [N, 2H, 2W, C] */
#define DEFINE_STATS_UP(NAME, T, LOAD)                                                                     \
    static void NAME(const T *x, int64_t N, int64_t H, int64_t W, int64_t C, double eps, float *mean,     \
                     float *rstd, int threads) {                                                           \
        double *acc = calloc((size_t)(2 * C), sizeof(double));                                             \
        float *shift = malloc((size_t)C * sizeof(float));                                                  \
        for (int64_t n = 0; n < N; ++n) {                                                                  \
            const T *hn = x + n * H * W * C;                                                               \
            for (int64_t c = 0; c < C; ++c) shift[c] = LOAD(hn, c); /* the upsampled (0, 0) is x's */      \
            STATS_REGION(C, 4 * H * W * C, {                                                               \
                _Pragma("omp for schedule(static)") for (int64_t Y = 0; Y < 2 * H; ++Y) {                   \
                    int64_t y0, y1;                                                                        \
                    float ly0, ly1;                                                                        \
                    up_source(Y, H, &y0, &y1, &ly0, &ly1);                                                 \
                    for (int64_t X = 0; X < 2 * W; ++X) {                                                  \
                        UP_PIXEL_SETUP(T)                                                                  \
                        _Pragma("omp simd") for (int64_t c = 0; c < C; ++c) {                              \
                            float v = UP_VALUE(LOAD, c) - shift[c];                                        \
                            f[c] += v;                                                                     \
                            f[C + c] += v * v;                                                             \
                        }                                                                                  \
                    }                                                                                      \
                    flush_rows(s, f, 2 * C); /* one output row: at most 2W pixels in float */              \
                }                                                                                          \
            })                                                                                             \
            finish_stats(acc, shift, C, 4 * H * W, eps, mean + n * C, rstd + n * C);                       \
        }                                                                                                  \
        free(acc);                                                                                         \
        free(shift);                                                                                       \
    }

DEFINE_STATS_UP(stats_up_f32, float, F32_LOAD)
DEFINE_STATS_UP(stats_up_bf16, uint16_t, bf16_load)

/* out [N, 2H, 2W, C] = act((up(x) - mean) * rstd * g + b); g, b strides refer to the output.
 * One output pixel per call of the inline pixel function: its restrict arguments let the channel
 * loop vectorise (inside the OpenMP loop the compiler cannot prove the pointers apart). */
#define DEFINE_MOD_UP(NAME, T, LOAD, STORE, HG, HB, ACT)                                                  \
    static inline void NAME##_pixel(const T *restrict r00, const T *restrict r01, const T *restrict r10, \
                                    const T *restrict r11, float ly0, float ly1, float lx0, float lx1,   \
                                    const float *restrict mu, const float *restrict rs,                   \
                                    const T *restrict gr, const T *restrict br, float slope,              \
                                    T *restrict o, int64_t C) {                                           \
        _Pragma("omp simd") for (int64_t c = 0; c < C; ++c)                                               \
            MODULATE_STORE((UP_VALUE(LOAD, c) - mu[c]) * rs[c], LOAD, STORE, HG, HB, ACT)                 \
    }                                                                                                     \
    static void NAME(const T *x, int64_t N, int64_t H, int64_t W, int64_t C, const float *mean,          \
                     const float *rstd, const T *g, int64_t gn, int64_t gp, const T *b, int64_t bn,      \
                     int64_t bp, float slope, T *out, int threads) {                                      \
        for (int64_t n = 0; n < N; ++n) {                                                                 \
            const T *hn = x + n * H * W * C;                                                              \
            const float *mu = mean + n * C, *rs = rstd + n * C;                                           \
            _Pragma("omp parallel for schedule(static) num_threads(threads) if (4 * H * W * C >= 32768)") \
            for (int64_t Y = 0; Y < 2 * H; ++Y) {                                                         \
                int64_t y0, y1;                                                                           \
                float ly0, ly1;                                                                           \
                up_source(Y, H, &y0, &y1, &ly0, &ly1);                                                    \
                for (int64_t X = 0; X < 2 * W; ++X) {                                                     \
                    int64_t x0, x1;                                                                       \
                    float lx0, lx1;                                                                       \
                    up_source(X, W, &x0, &x1, &lx0, &lx1);                                                \
                    int64_t p = Y * 2 * W + X;                                                            \
                    NAME##_pixel(hn + (y0 * W + x0) * C, hn + (y0 * W + x1) * C, hn + (y1 * W + x0) * C, \
                                 hn + (y1 * W + x1) * C, ly0, ly1, lx0, lx1, mu, rs,                      \
                                 HG ? g + n * gn + p * gp : 0, HB ? b + n * bn + p * bp : 0, slope,       \
                                 out + (n * 4 * H * W + p) * C, C);                                       \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
    }

DEFINE_VARIANTS(DEFINE_MOD_UP, mod_up_f32, float, F32_LOAD, F32_STORE)
DEFINE_VARIANTS(DEFINE_MOD_UP, mod_up_bf16, uint16_t, bf16_load, BF16_STORE)

#define DISPATCH_UP(SUFFIX, T)                                                                             \
    {                                                                                                      \
        typedef void (*fn)(const T *, int64_t, int64_t, int64_t, int64_t, const float *, const float *,   \
                           const T *, int64_t, int64_t, const T *, int64_t, int64_t, float, T *, int);    \
        static const fn table[8] = VARIANT_TABLE(mod_up_##SUFFIX);                                         \
        table[VARIANT]((const T *)x, N, H, W, C, mean, rstd, (const T *)g, gn, gp, (const T *)b, bn, bp,  \
                       slope, (T *)out, threads);                                                          \
    }

/* x [N, H, W, C]; statistics of its bilinear x2 upsampling */
int thead_up_stats(const void *x, int dtype, int64_t N, int64_t H, int64_t W, int64_t C, double eps, float *mean,
                   float *rstd, int threads) {
    if (dtype == 0)
        stats_up_f32((const float *)x, N, H, W, C, eps, mean, rstd, threads);
    else if (dtype == 1)
        stats_up_bf16((const uint16_t *)x, N, H, W, C, eps, mean, rstd, threads);
    else
        return 1;
    return 0;
}

/* x [N, H, W, C]; out [N, 2H, 2W, C] = act((up(x) - mean) * rstd * g + b) */
int thead_up_modulate(const void *x, int dtype, int64_t N, int64_t H, int64_t W, int64_t C, const float *mean,
                      const float *rstd, const void *g, int64_t gn, int64_t gp, const void *b, int64_t bn, int64_t bp,
                      float slope, int act, void *out, int threads) {
    if (dtype == 0)
        DISPATCH_UP(f32, float)
    else if (dtype == 1)
        DISPATCH_UP(bf16, uint16_t)
    else
        return 1;
    return 0;
}

int thead_in_stats(const void *x, int dtype, int64_t N, int64_t P, int64_t C, double eps, float *mean, float *rstd,
                   int threads) {
    if (dtype == 0)
        stats_f32((const float *)x, N, P, C, eps, mean, rstd, threads);
    else if (dtype == 1)
        stats_bf16((const uint16_t *)x, N, P, C, eps, mean, rstd, threads);
    else
        return 1;
    return 0;
}

int thead_modulate(const void *x, int dtype, int64_t N, int64_t P, int64_t C, const float *mean, const float *rstd,
                   const void *g, int64_t gn, int64_t gp, const void *b, int64_t bn, int64_t bp, float slope, int act,
                   void *out, int threads) {
    if (dtype == 0)
        DISPATCH(f32, float)
    else if (dtype == 1)
        DISPATCH(bf16, uint16_t)
    else
        return 1;
    return 0;
}
