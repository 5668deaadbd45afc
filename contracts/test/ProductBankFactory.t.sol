// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {ProductBank} from "../src/ProductBank.sol";
import {ProductBankFactory} from "../src/ProductBankFactory.sol";

contract ProductBankFactoryTest is Fixture {
    event BankDeployed(bytes32 indexed productId, address indexed bank, address indexed owner);

    function test_deploy_atPredictedAddressAndEmits() public {
        bytes32 pid = keccak256("new.example.com");
        address predicted = factory.computeBankAddress(pid, owner);
        assertEq(predicted.code.length, 0);
        vm.expectEmit(true, true, true, false, address(factory));
        emit BankDeployed(pid, predicted, owner);
        address b = factory.deployBank(pid, owner);
        assertEq(b, predicted);
        ProductBank pb = ProductBank(b);
        assertEq(pb.productId(), pid);
        assertEq(address(pb.pushPull()), address(pushPull));
        assertTrue(pb.hasRole(pb.DEFAULT_ADMIN_ROLE(), owner));
        assertFalse(pb.hasRole(pb.DEFAULT_ADMIN_ROLE(), address(factory)));
    }

    function test_deploy_twiceReverts() public {
        address existing = factory.computeBankAddress(PRODUCT, owner);
        vm.expectRevert(abi.encodeWithSelector(ProductBankFactory.BankAlreadyDeployed.selector, existing));
        factory.deployBank(PRODUCT, owner);
    }

    function test_deploy_zeroAddressesRevert() public {
        vm.expectRevert(ProductBankFactory.ZeroAddress.selector);
        factory.deployBank(PRODUCT, address(0));
        vm.expectRevert(ProductBankFactory.ZeroAddress.selector);
        new ProductBankFactory(address(0));
    }

    function testFuzz_addressDependsOnProductAndOwner(bytes32 a, bytes32 b, address o) public view {
        vm.assume(a != b && o != address(0));
        assertTrue(factory.computeBankAddress(a, o) != factory.computeBankAddress(b, o));
        assertTrue(factory.computeBankAddress(a, o) == factory.computeBankAddress(a, o));
        if (o != owner) assertTrue(factory.computeBankAddress(a, o) != factory.computeBankAddress(a, owner));
    }
}
