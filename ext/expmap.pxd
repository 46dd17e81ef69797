# Index mapping of the base-2 exponential histogram (OpenTelemetry data model).
#
# At scale s the bucket base is b = 2**(2**-s) and bucket i holds (b**i, b**(i+1)]
# (upper-inclusive, as in OTel). The index is built from frexp so that the power-of-two
# part is exact: value = f * 2**e with f in [1, 2); index = (e << s) + floor(log2(f) * 2**s)
# for s > 0, and e >> -s for s <= 0; exact powers of two go one bucket down. Since the
# sub-octave term is one double z = log2(f) scaled by a power of two (an exact product),
# map_index(v, s - c) == map_index(v, s) >> c for every c >= 0: downscaling by shifting
# and recording at the lower scale put a value in the same bucket.
from libc.math cimport frexp, log, floor, ldexp, exp2
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    static const double GW_INV_LN2 = 1.4426950408889634074;
    static const double GW_ONE_MINUS_ULP = 0.99999999999999988898;
    static const unsigned long long GW_MANT_MASK = 0x000FFFFFFFFFFFFFULL;
    static const unsigned long long GW_ONE_BITS = 0x3FF0000000000000ULL;
    """
    const double GW_INV_LN2
    const double GW_ONE_MINUS_ULP
    const uint64_t GW_MANT_MASK
    const uint64_t GW_ONE_BITS


cdef inline long long map_index(double value, int scale) noexcept nogil:
    """Bucket index of a finite value > 0 at ``scale``.

    The exponent and the mantissa come straight from the IEEE bits (same results as
    frexp, which is kept for subnormals); log runs only for scale > 0 and non-powers of
    two, and floor is a truncation since the scaled sub-octave term is >= 0.
    """
    cdef uint64_t bits
    cdef uint64_t mant
    cdef long long e
    cdef double m
    cdef double z
    memcpy(&bits, &value, sizeof(double))
    if (bits >> 52) == 0:
        return _map_index_frexp(value, scale)       # subnormal
    e = <long long>(bits >> 52) - 1023
    mant = bits & GW_MANT_MASK
    if mant == 0:
        # exact power of two: upper boundary of the bucket below
        if scale > 0:
            return e * (1LL << scale) - 1
        return (e - 1) >> (-scale)
    if scale <= 0:
        return e >> (-scale)
    bits = mant | GW_ONE_BITS                      # 1.mantissa, in (1, 2)
    memcpy(&m, &bits, sizeof(double))
    z = log(m) * GW_INV_LN2
    if z > GW_ONE_MINUS_ULP:
        z = GW_ONE_MINUS_ULP
    return e * (1LL << scale) + <long long>(z * <double>(1LL << scale))


cdef inline long long _map_index_frexp(double value, int scale) noexcept nogil:
    cdef int exp2_part
    cdef double frac = frexp(value, &exp2_part)   # value = frac * 2**exp2_part, frac in [0.5, 1)
    cdef long long e = exp2_part - 1               # value = (2 * frac) * 2**e
    cdef double z
    cdef long long sub
    if frac == 0.5:
        if scale > 0:
            return e * (1LL << scale) - 1
        return (e - 1) >> (-scale)
    if scale <= 0:
        return e >> (-scale)
    z = log(2.0 * frac) * GW_INV_LN2
    if z > GW_ONE_MINUS_ULP:
        z = GW_ONE_MINUS_ULP
    sub = <long long>floor(ldexp(z, scale))
    return e * (1LL << scale) + sub


cdef inline double lower_boundary(long long index, int scale) noexcept nogil:
    """Lower (exclusive) boundary b**index of bucket ``index``."""
    cdef long long q
    cdef long long r
    if scale <= 0:
        return ldexp(1.0, <int>(index * (1LL << (-scale))))
    q = index >> scale
    r = index - q * (1LL << scale)
    return ldexp(exp2(ldexp(<double>r, -scale)), <int>q)
