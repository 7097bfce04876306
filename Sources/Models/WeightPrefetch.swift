import Foundation
import LoomCore

/// Which weights a decode step asks the device to move into L2 ahead of the GEMM that reads them,
/// and how much of each (`ComputeBackend.prefetch`).
///
/// A decode step's GEMMs stream their weights from HBM, while the kernels between them (RoPE and
/// decode attention before o, an RMSNorm before gate/up, SiLU·mul before down) are latency-bound and
/// leave most of its bandwidth idle. A prefetch queued right after the previous GEMM moves the next
/// weight during them; its GEMM then reads from L2. Only batches of at most `maxRows` tokens
/// prefetch: larger GEMMs are bound by compute, not by their weights.
public struct WeightPrefetch: Sendable, Equatable {
    /// The GEMMs whose weights can be prefetched, named by what runs before them.
    public enum Group: String, CaseIterable, Sendable {
        /// q/k/v of the next layer (during the RMSNorm after down), or the LM head after the last layer.
        case qkv
        /// o (during RoPE and attention).
        case o
        /// gate/up (during the RMSNorm after o).
        case gateUp = "gate_up"
        /// down (during SiLU·mul).
        case down
    }

    public var groups: Set<Group>
    /// Bytes prefetched per weight at most, from its start.
    public var maxBytes: Int
    public var maxRows: Int

    public init(groups: Set<Group>, maxBytes: Int = 32 << 20, maxRows: Int = 256) {
        self.groups = groups
        self.maxBytes = maxBytes
        self.maxRows = maxRows
    }

    public static let off = WeightPrefetch(groups: [])

    /// From `LOOM_L2_PREFETCH` (groups separated by `,` or `+`, or `off`, the default) and
    /// `LOOM_L2_PREFETCH_MB` (bytes per weight, default 32 MiB).
    public static func from(environment: [String: String]) throws -> WeightPrefetch {
        var prefetch = WeightPrefetch(groups: [])
        if let list = environment["LOOM_L2_PREFETCH"] {
            prefetch.groups = []
            for name in list.split(whereSeparator: { $0 == "," || $0 == "+" }).map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty && name != "off" {
                guard let group = Group(rawValue: name) else {
                    throw LoomError.invalidArgument("LOOM_L2_PREFETCH: unknown group '\(name)' (expected off or some of \(Group.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                prefetch.groups.insert(group)
            }
        }
        if let text = environment["LOOM_L2_PREFETCH_MB"] {
            guard let mb = Int(text), mb >= 0 else { throw LoomError.invalidArgument("LOOM_L2_PREFETCH_MB: expected a number of MiB, got '\(text)'") }
            prefetch.maxBytes = mb << 20
        }
        return prefetch
    }
}
