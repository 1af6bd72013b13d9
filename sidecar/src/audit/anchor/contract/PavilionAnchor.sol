// SPDX-License-Identifier: UNLICENSED
pragma solidity 0.8.37;

/// @title PavilionAnchor
/// @notice Records audit log checkpoints: for each log (the SHA-256 of its origin), the
/// Merkle root at a tree size and the SHA-256 of the checkpoint's signature. A log's tree
/// size must grow with every anchor, so a log's anchored history cannot be rewritten or
/// replayed out of order. Only submitters the owner authorised may write.
contract PavilionAnchor {
    struct Checkpoint {
        bytes32 root;
        bytes32 checkpointSigHash;
    }

    address public immutable owner;
    mapping(address => bool) public submitters;
    /// @notice The largest tree size anchored per log id (0: none yet).
    mapping(bytes32 => uint64) public latestTreeSize;
    mapping(bytes32 => mapping(uint64 => Checkpoint)) private checkpoints;

    event Anchored(bytes32 indexed logId, uint64 indexed treeSize, bytes32 root, bytes32 checkpointSigHash);
    event SubmitterChanged(address indexed submitter, bool allowed);

    error NotAuthorised(address sender);
    error TreeSizeNotGrowing(bytes32 logId, uint64 treeSize, uint64 latestTreeSize);
    error EmptyRoot();

    constructor() {
        owner = msg.sender;
        submitters[msg.sender] = true;
        emit SubmitterChanged(msg.sender, true);
    }

    function setSubmitter(address submitter, bool allowed) external {
        if (msg.sender != owner) revert NotAuthorised(msg.sender);
        submitters[submitter] = allowed;
        emit SubmitterChanged(submitter, allowed);
    }

    function anchor(bytes32 logId, uint64 treeSize, bytes32 root, bytes32 checkpointSigHash) external {
        if (!submitters[msg.sender]) revert NotAuthorised(msg.sender);
        if (root == bytes32(0)) revert EmptyRoot();
        uint64 latest = latestTreeSize[logId];
        if (treeSize <= latest) revert TreeSizeNotGrowing(logId, treeSize, latest);
        latestTreeSize[logId] = treeSize;
        checkpoints[logId][treeSize] = Checkpoint(root, checkpointSigHash);
        emit Anchored(logId, treeSize, root, checkpointSigHash);
    }

    /// @notice The anchored root and signature hash at a tree size; zeros when none.
    function anchorOf(bytes32 logId, uint64 treeSize) external view returns (bytes32 root, bytes32 checkpointSigHash) {
        Checkpoint storage checkpoint = checkpoints[logId][treeSize];
        return (checkpoint.root, checkpoint.checkpointSigHash);
    }
}
