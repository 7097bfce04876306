/// A captured graph's kernels and dependency edges, read before it is instantiated: what
/// `bench decode` reports of a decode graph (`graphSummaries`), and the one edit Loom makes to it.
/// cuBLASLt launches its GEMMs without programmatic stream serialization, so each one starts only
/// after the kernel before it has finished, although its Hopper GEMM kernels (`nvjet_sm90_*`) wait
/// for their producers with `griddepcontrol.wait` (SASS `ACQBULK`) before they read, and cuBLASLt
/// itself launches its split-K reduction after them programmatically. So each default edge from a
/// kernel into an `nvjet_sm90_*` kernel becomes programmatic, as if Loom had launched it
/// (`LOOM_BLAS_PDL=0`: off). `scripts/gpu/check.sh device sass` shows the wait in the SASS of the
/// GEMM kernels the decode graphs use.
struct GraphEdges {
    /// Kernels known to wait for their producers (see above); edges into others stay as captured.
    static let waitingKernelPrefixes = ["nvjet_sm90_"]

    /// `CUgraphEdgeData` (8 bytes): from_port, to_port, type, five reserved bytes.
    static let defaultEdge: UInt64 = 0
    /// Type programmatic (1) from the programmatic port (1): the edge a programmatic launch captures.
    static let programmaticEdge: UInt64 = 1 | 1 << 16

    let from: [OpaquePointer?]
    let to: [OpaquePointer?]
    let data: [UInt64]

    /// Nil where the driver lacks the graph-editing calls (before CUDA 12.3).
    init?(graph: OpaquePointer?, driver: Driver) {
        guard let getEdges = driver.cuGraphGetEdges else { return nil }
        var count = 0
        guard getEdges(graph, nil, nil, nil, &count) == 0 else { return nil }
        var from = [OpaquePointer?](repeating: nil, count: count), to = from
        var data = [UInt64](repeating: 0, count: count)
        guard getEdges(graph, &from, &to, &data, &count) == 0 else { return nil }
        self.from = Array(from.prefix(count))
        self.to = Array(to.prefix(count))
        self.data = Array(data.prefix(count))
    }

    /// A kernel node's function name; nil for other nodes.
    static func kernelName(_ node: OpaquePointer?, driver: Driver) -> String? {
        guard let getType = driver.cuGraphNodeGetType, let getParams = driver.cuGraphKernelNodeGetParams else { return nil }
        var type: Int32 = -1
        guard getType(node, &type) == 0, type == 0 else { return nil }
        // CUDA_KERNEL_NODE_PARAMS_v2: the function at 0, the CUkernel at 56 (72 bytes; room to spare).
        var params = [UInt64](repeating: 0, count: 32)
        guard params.withUnsafeMutableBytes({ getParams(node, $0.baseAddress!) }) == 0 else { return nil }
        var name: UnsafePointer<CChar>?
        if params[0] != 0, let get = driver.cuFuncGetName { _ = get(&name, OpaquePointer(bitPattern: UInt(params[0]))) }
        if name == nil, params[7] != 0, let get = driver.cuKernelGetName { _ = get(&name, OpaquePointer(bitPattern: UInt(params[7]))) }
        return name.map { String(cString: $0) } ?? "?"
    }

    /// Kernel launches by name and edges by kind (`loom`, `blas` or `other` at each end, and the
    /// edge's type), plus how many edges `makeBLASEdgesProgrammatic` turned.
    func summary(driver: Driver, converted: Int) -> [String: Any] {
        var names: [OpaquePointer?: String?] = [:]
        func name(_ node: OpaquePointer?) -> String? {
            if let known = names[node] { return known }
            let n = Self.kernelName(node, driver: driver)
            names[node] = n
            return n
        }
        func kind(_ node: OpaquePointer?) -> String {
            guard let n = name(node) else { return "other" }
            return n.hasPrefix("loom_") ? "loom" : "blas"
        }
        var edges: [String: Int] = [:]
        for i in from.indices {
            let type = (data[i] >> 16) & 0xff, port = data[i] & 0xff
            edges["\(kind(from[i])) → \(kind(to[i])) type \(type) port \(port)", default: 0] += 1
        }
        var kernels: [String: Int] = [:]
        for case let n? in names.values { kernels[n, default: 0] += 1 }
        return ["edges": edges, "kernels": kernels, "converted_edges": converted]
    }

    /// Turns every default edge from a kernel into a waiting cuBLASLt kernel programmatic; returns how many.
    func makeBLASEdgesProgrammatic(graph: OpaquePointer?, driver: Driver) -> Int {
        guard let remove = driver.cuGraphRemoveDependencies, let add = driver.cuGraphAddDependencies else { return 0 }
        var converted = 0
        for i in from.indices where data[i] == Self.defaultEdge {
            guard Self.kernelName(from[i], driver: driver) != nil, let target = Self.kernelName(to[i], driver: driver),
                  Self.waitingKernelPrefixes.contains(where: { target.hasPrefix($0) }) else { continue }
            var f = from[i], t = to[i], old = Self.defaultEdge, new = Self.programmaticEdge
            guard remove(graph, &f, &t, &old, 1) == 0 else { continue }
            if add(graph, &f, &t, &new, 1) == 0 {
                converted += 1
            } else {
                _ = add(graph, &f, &t, &old, 1)  // refused: the edge stays as captured
            }
        }
        return converted
    }
}
