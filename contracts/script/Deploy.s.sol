// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm, console} from "../test/utils/Test.sol";
import {MultiTokenPushPull} from "../src/MultiTokenPushPull.sol";
import {ProductBank} from "../src/ProductBank.sol";
import {ProductBankFactory} from "../src/ProductBankFactory.sol";
import {TestToken} from "../src/mocks/TestToken.sol";

/// @notice Local/dev deployment (see scripts/deploy.sh for the environment variables).
///         Prints NAME=0x... lines for the deployed (or reused) addresses.
contract Deploy {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
    /// @dev anvil's default account 0 (public, well-known test key).
    uint256 internal constant ANVIL_KEY_0 = 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80;

    function run() external {
        uint256 key = vm.envOr("DEPLOYER_PRIVATE_KEY", ANVIL_KEY_0);
        address deployer = vm.addr(key);
        address distributor = vm.envOr("DISTRIBUTOR", deployer);
        bytes32 productId = vm.envOr("PRODUCT_ID", keccak256("demo.rewardflow.local"));
        uint256 funding = vm.envOr("FUND_AMOUNT", uint256(1_000_000e18));
        address factoryAddr = vm.envOr("PRODUCT_BANK_FACTORY", address(0));
        address tokenAddr = vm.envOr("DEMO_TOKEN", address(0));

        vm.startBroadcast(key);
        ProductBankFactory factory;
        MultiTokenPushPull pushPull;
        if (factoryAddr == address(0)) {
            pushPull = new MultiTokenPushPull(deployer);
            factory = new ProductBankFactory(address(pushPull));
        } else {
            factory = ProductBankFactory(factoryAddr);
            pushPull = MultiTokenPushPull(factory.pushPull());
        }
        TestToken token;
        if (tokenAddr == address(0)) {
            token = new TestToken("Rewardflow Demo Token", "RFD", 18);
            token.mint(deployer, 1_000_000_000e18);
        } else {
            token = TestToken(tokenAddr);
        }
        ProductBank bank = ProductBank(factory.deployBank(productId, deployer));
        pushPull.authorizePusher(address(bank));
        bank.grantRole(bank.DISTRIBUTOR_ROLE(), distributor);
        if (funding != 0) {
            token.approve(address(bank), funding);
            bank.deposit(address(token), funding);
        }
        vm.stopBroadcast();

        console.log(string.concat("MULTI_TOKEN_PUSH_PULL=", vm.toString(address(pushPull))));
        console.log(string.concat("PRODUCT_BANK_FACTORY=", vm.toString(address(factory))));
        console.log(string.concat("DEMO_TOKEN=", vm.toString(address(token))));
        console.log(string.concat("PRODUCT_BANK=", vm.toString(address(bank))));
    }
}
