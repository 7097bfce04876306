import Foundation

/// When requests are sent: all at once, a Poisson process, a gamma process with a coefficient of
/// variation (S-LoRA's `cv`: 1 is Poisson, larger is burstier), or evenly spaced.
public enum ArrivalProcess: Sendable, Equatable, CustomStringConvertible {
    /// Every request at time 0 (`--request-rate inf`); `--max-concurrency` then paces them.
    case burst
    case poisson(rate: Double)
    case gamma(rate: Double, cv: Double)
    /// One request every `1 / rate` seconds.
    case fixed(rate: Double)

    /// `--arrival` and `--request-rate` (`inf` for a burst) and `--cv` (gamma only).
    public init(kind: String, rate: Double, cv: Double) throws {
        if rate.isInfinite {
            self = .burst
            return
        }
        guard rate > 0, rate.isFinite else { throw BenchError.invalidOption("--request-rate must be positive or inf, not \(rate)") }
        switch kind {
        case "poisson": self = .poisson(rate: rate)
        case "gamma":
            guard cv > 0, cv.isFinite else { throw BenchError.invalidOption("--cv must be positive, not \(cv)") }
            self = .gamma(rate: rate, cv: cv)
        case "fixed": self = .fixed(rate: rate)
        default: throw BenchError.invalidOption("--arrival must be poisson, gamma or fixed, not '\(kind)'")
        }
    }

    /// Requests per second; infinity for a burst.
    public var rate: Double {
        switch self {
        case .burst: .infinity
        case .poisson(let r), .gamma(let r, _), .fixed(let r): r
        }
    }

    public var description: String {
        switch self {
        case .burst: "all at once"
        case .poisson(let r): "poisson \(r) req/s"
        case .gamma(let r, let cv): "gamma \(r) req/s, cv \(cv)"
        case .fixed(let r): "fixed \(r) req/s"
        }
    }

    /// Send times in seconds from the start: the first request at 0, then one interval each, as
    /// `sglang.bench_serving` paces them (sleep after each send).
    public func offsets(count: Int, rng: inout SeededGenerator) -> [Double] {
        var offsets = [Double]()
        offsets.reserveCapacity(count)
        var t = 0.0
        for _ in 0..<count {
            offsets.append(t)
            t += interval(rng: &rng)
        }
        return offsets
    }

    /// One gap between sends.
    public func interval(rng: inout SeededGenerator) -> Double {
        switch self {
        case .burst: 0
        case .poisson(let r): rng.nextExponential(mean: 1 / r)
        case .fixed(let r): 1 / r
        case .gamma(let r, let cv):
            // Shape k = 1/cv², scale θ = cv²/r: mean kθ = 1/r, cv = 1/√k (S-LoRA's generator).
            rng.nextGamma(shape: 1 / (cv * cv), scale: cv * cv / r)
        }
    }
}
