import Foundation
import LoomCore
import ModelFormats

/// A registered adapter as requests see it. `uid` is fresh for every load, so KV or slots computed
/// under an earlier adapter of the same name are never reused.
public struct AdapterRef: Sendable, Equatable, Hashable {
    public var name: String
    public var path: String
    public var pinned: Bool
    public var uid: UInt64
    public var maxRank: Int
    public var targetModules: Set<TargetModule>
}

/// Names → adapters, with in-flight request counts. Thread-safe: the server reads it while the
/// engine loop runs. `uid` 0 is the base model.
public final class AdapterRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var byName: [String: AdapterRef] = [:]
    private var order: [String] = []
    private var inFlight: [UInt64: Int] = [:]
    private var nextUID: UInt64 = 1

    public init() {}

    /// Adds an adapter under a new uid; the caller has validated it.
    @discardableResult
    public func register(name: String, path: String, pinned: Bool, maxRank: Int, targetModules: Set<TargetModule>) throws -> AdapterRef {
        try lock.withLock {
            guard byName[name] == nil else {
                throw LoomError.invalidArgument("Failed to load LoRA adapter \(name) because it is already loaded")
            }
            let ref = AdapterRef(name: name, path: path, pinned: pinned, uid: nextUID, maxRank: maxRank, targetModules: targetModules)
            nextUID += 1
            byName[name] = ref
            order.append(name)
            return ref
        }
    }

    /// Removes `name`; requests naming it are refused from now on.
    @discardableResult
    public func unregister(name: String) throws -> AdapterRef {
        try lock.withLock {
            guard let ref = byName.removeValue(forKey: name) else {
                throw LoomError.invalidArgument("LoRA adapter \(name) is not loaded")
            }
            order.removeAll { $0 == name }
            return ref
        }
    }

    public func lookup(_ name: String) -> AdapterRef? { lock.withLock { byName[name] } }

    /// Registered adapters in registration order.
    public var adapters: [AdapterRef] { lock.withLock { order.compactMap { byName[$0] } } }

    public var pinnedCount: Int { lock.withLock { byName.values.filter(\.pinned).count } }

    /// Resolves request adapter names (nil = base) or throws SGLang's message listing what is loaded.
    public func resolve(_ names: [String?]) throws -> [AdapterRef?] {
        try lock.withLock {
            let missing = Set(names.compactMap { $0 }.filter { byName[$0] == nil })
            guard missing.isEmpty else {
                throw LoomError.invalidArgument(
                    "The following requested LoRA adapters are not loaded: \(missing.sorted().joined(separator: ", "))\nLoaded adapters: \(order.joined(separator: ", "))")
            }
            return names.map { $0.flatMap { byName[$0] } }
        }
    }

    /// Counts a request that uses adapter `uid` until `release`.
    public func acquire(_ uid: UInt64) { lock.withLock { inFlight[uid, default: 0] += 1 } }

    public func release(_ uid: UInt64) {
        lock.withLock {
            let n = (inFlight[uid] ?? 0) - 1
            precondition(n >= 0, "released adapter \(uid) more often than acquired")
            inFlight[uid] = n == 0 ? nil : n
        }
    }

    public func inFlightCount(_ uid: UInt64) -> Int { lock.withLock { inFlight[uid] ?? 0 } }
}
