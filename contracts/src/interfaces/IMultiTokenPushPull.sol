// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice One reward line of a batch: `amount` base units of the batch token for `user`.
struct Reward {
    address user;
    uint256 amount;
}

/// @title IMultiTokenPushPull
/// @notice Global, token-agnostic ledger of pushed rewards that users pull (claim).
interface IMultiTokenPushPull {
    event RewardAdded(address indexed token, address indexed user, address indexed emitter, uint256 amount);
    event RewardClaimed(address indexed token, address indexed user, uint256 amount);
    event PusherAuthorized(address indexed pusher);
    event PusherRevoked(address indexed pusher);

    error ZeroAddress();
    error ZeroAmount();
    error EmptyBatch();
    error UnauthorizedPusher(address caller);
    error AmountTooLarge();
    error InsufficientFunding(address token, uint256 balance, uint256 required);
    error NothingToClaim(address token, address user);

    function authorizePusher(address pusher) external;
    function revokePusher(address pusher) external;
    function isPusherAuthorized(address pusher) external view returns (bool);

    function pushRewards(address token, Reward[] calldata rewards) external;
    function pullReward(address token) external;
    function pullRewards(address[] calldata tokens) external;

    function getPendingAmount(address token, address user) external view returns (uint256);
    function getPendingAmounts(address[] calldata tokens, address user) external view returns (uint256[] memory);
    function getTotalPending(address token) external view returns (uint256);
}
