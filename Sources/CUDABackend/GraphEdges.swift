/// A captured graph's kernels and dependency edges, read before it is instantiated: what
/// `bench decode` reports of a decode graph (`graphSummaries`: kernel launches by name, edges by
/// kind and type). It showed that the edges into cuBLASLt's GEMMs (`nvjet_sm90_*` with cuBLAS 13.1)
/// are default ones, so each GEMM starts only after the kernel before it has finished. Those
/// kernels cannot be made programmatic: their SASS has no `griddepcontrol.wait` (ACQBULK;
/// `scripts/gpu/check.sh device sass`), so they would read their input before it is written.
struct GraphEdges {
    let from: [OpaquePointer?]
    let to: [OpaquePointer?]
    /// Each edge's `CUgraphEdgeData` (8 bytes: from_port, to_port, type, five reserved).
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
    /// edge's type and port).
    func summary(driver: Driver) -> [String: Any] {
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
        return ["edges": edges, "kernels": kernels]
    }
}
