// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ProductBank} from "./ProductBank.sol";

/// @title ProductBankFactory
/// @notice Deploys ProductBanks at deterministic (CREATE2) addresses: salt = productId,
///         so a bank's address is known from (factory, productId, owner) before it exists.
/// @dev The owner is part of the init code, so nobody can take another owner's address
///      for a product. The new bank still has to be authorized on MultiTokenPushPull.
contract ProductBankFactory {
    /// @notice The MultiTokenPushPull every bank of this factory pushes to.
    address public immutable pushPull;

    event BankDeployed(bytes32 indexed productId, address indexed bank, address indexed owner);

    error ZeroAddress();
    error BankAlreadyDeployed(address bank);

    constructor(address pushPull_) {
        if (pushPull_ == address(0)) revert ZeroAddress();
        pushPull = pushPull_;
    }

    /// @notice Deploys the bank of `productId` owned by `owner`. Anyone may call.
    function deployBank(bytes32 productId, address owner) external returns (address bank) {
        if (owner == address(0)) revert ZeroAddress();
        address predicted = computeBankAddress(productId, owner);
        if (predicted.code.length != 0) revert BankAlreadyDeployed(predicted);
        bank = address(new ProductBank{salt: productId}(productId, pushPull, owner));
        emit BankDeployed(productId, bank, owner);
    }

    /// @notice The address `deployBank(productId, owner)` deploys (or deployed) to.
    function computeBankAddress(bytes32 productId, address owner) public view returns (address) {
        bytes32 initCodeHash =
            keccak256(abi.encodePacked(type(ProductBank).creationCode, abi.encode(productId, pushPull, owner)));
        return address(uint160(uint256(keccak256(abi.encodePacked(bytes1(0xff), address(this), productId, initCodeHash)))));
    }
}
