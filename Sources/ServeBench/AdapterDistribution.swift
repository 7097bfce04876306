import Foundation

/// How requests pick their adapter among `n` names.
///
/// - `uniform`, `distinct`, `skewed`: SGLang's `--lora-request-distribution` (skewed gives adapter i
///   weight `alpha^-i`, `--lora-zipf-alpha`).
/// - `zipf`: a power law over ranks, weight `(i + 1)^-alpha` (`--lora-zipf-alpha`).
/// - `power`: S-LoRA's generator, adapter `⌊n · U^(1/alpha)⌋` (`--lora-power-alpha`; 1 is uniform,
///   smaller is more skewed towards the first adapters), the `alpha` of the S-LoRA paper.
public enum AdapterDistribution: Sendable, Equatable {
    case uniform
    case distinct
    case skewed(alpha: Double)
    case zipf(alpha: Double)
    case power(alpha: Double)

    public init(name: String, zipfAlpha: Double, powerAlpha: Double) throws {
        switch name {
        case "uniform": self = .uniform
        case "distinct": self = .distinct
        case "skewed":
            guard zipfAlpha > 1 else { throw BenchError.invalidOption("--lora-zipf-alpha must be > 1 for skewed (weights alpha^-i)") }
            self = .skewed(alpha: zipfAlpha)
        case "zipf":
            guard zipfAlpha > 0 else { throw BenchError.invalidOption("--lora-zipf-alpha must be > 0") }
            self = .zipf(alpha: zipfAlpha)
        case "power", "power-law", "slora":
            guard powerAlpha > 0 else { throw BenchError.invalidOption("--lora-power-alpha must be > 0") }
            self = .power(alpha: powerAlpha)
        default:
            throw BenchError.invalidOption("--lora-request-distribution must be uniform, distinct, skewed, zipf or power, not '\(name)'")
        }
    }

    public var name: String {
        switch self {
        case .uniform: "uniform"
        case .distinct: "distinct"
        case .skewed: "skewed"
        case .zipf: "zipf"
        case .power: "power"
        }
    }

    public var alpha: Double? {
        switch self {
        case .uniform, .distinct: nil
        case .skewed(let a), .zipf(let a), .power(let a): a
        }
    }

    /// The adapter index of each of `count` requests among `n` adapters.
    public func assign(count: Int, among n: Int, rng: inout SeededGenerator) -> [Int] {
        precondition(n > 0, "no adapters to choose from")
        switch self {
        case .uniform:
            return (0..<count).map { _ in rng.nextInt(in: 0..<n) }
        case .distinct:
            return (0..<count).map { $0 % n }
        case .power(let alpha):
            return (0..<count).map { _ in min(Int(Double(n) * pow(rng.nextUnit(), 1 / alpha)), n - 1) }
        case .skewed(let alpha):
            return Self.sample(weights: (0..<n).map { pow(alpha, -Double($0)) }, count: count, rng: &rng)
        case .zipf(let alpha):
            return Self.sample(weights: (0..<n).map { pow(Double($0 + 1), -alpha) }, count: count, rng: &rng)
        }
    }

    /// Inverse-CDF sampling by binary search over the cumulative weights.
    static func sample(weights: [Double], count: Int, rng: inout SeededGenerator) -> [Int] {
        var cumulative = [Double]()
        cumulative.reserveCapacity(weights.count)
        var total = 0.0
        for w in weights {
            total += w
            cumulative.append(total)
        }
        return (0..<count).map { _ in
            let u = rng.nextUnit() * total
            var lo = 0, hi = cumulative.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if cumulative[mid] > u { hi = mid } else { lo = mid + 1 }
            }
            return lo
        }
    }
}
