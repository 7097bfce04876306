import Foundation

/// xoshiro256** seeded through SplitMix64: the same seed gives the same workload on every machine.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1), 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in (0, 1]: safe under `log`.
    mutating func nextOpenUnit() -> Double { 1 - nextUnit() }

    /// Exponential with the given mean.
    public mutating func nextExponential(mean: Double) -> Double { -mean * log(nextOpenUnit()) }

    /// Standard normal (Box–Muller; one of the pair is dropped to keep the state a plain value).
    public mutating func nextNormal() -> Double {
        sqrt(-2 * log(nextOpenUnit())) * cos(2 * Double.pi * nextUnit())
    }

    /// Gamma with shape `k` and scale `theta` (Marsaglia–Tsang; for k < 1 the boost
    /// `Gamma(k) = Gamma(k + 1) · U^(1/k)`).
    public mutating func nextGamma(shape k: Double, scale theta: Double) -> Double {
        precondition(k > 0 && theta > 0, "gamma needs a positive shape and scale")
        if k < 1 {
            return nextGamma(shape: k + 1, scale: theta) * pow(nextOpenUnit(), 1 / k)
        }
        let d = k - 1.0 / 3
        let c = 1 / (9 * d).squareRoot()
        while true {
            var x: Double
            var v: Double
            repeat {
                x = nextNormal()
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = nextOpenUnit()
            if u < 1 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1 - v + log(v)) {
                return d * v * theta
            }
        }
    }

    /// Uniform integer in `range`.
    public mutating func nextInt(in range: Range<Int>) -> Int { Int.random(in: range, using: &self) }
}
